"""The local stack's plan: ports, supervisord configuration, port checks, reset."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from tagloop_dev.stack.config import MARKER, Ports, Stack, StackError, prepare, reset, taken_ports
from tests.fixtures.stack import free_base_port


def make_stack(var_dir: Path, base: int = 8000) -> Stack:
    return Stack(var_dir=var_dir, workdir=Path.cwd(), ports=Ports.from_base(base))


def test_default_ports_are_the_contract_ports() -> None:
    assert Ports.from_base().named() == {
        "pubsub": 8085,
        "s3": 8333,
        "learning": 8010,
        "inference-1": 8001,
        "inference-2": 8002,
        "ui": 8080,
    }


@pytest.mark.parametrize(("base", "replicas"), [(8000, 0), (8000, 10), (65300, 2), (0, 2)])
def test_impossible_port_layouts_are_refused(base: int, replicas: int) -> None:
    with pytest.raises(StackError):
        Ports.from_base(base, replicas)


def test_supervisord_reads_the_generated_configuration(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "var", base=21000)
    prepare(stack)
    options = ServerOptions()
    options.realize(args=["-c", str(stack.conf_path)])
    configs = {c.name: c for group in options.process_group_configs for c in group.process_configs}
    programs = {program.name: program for program in stack.programs()}
    assert set(configs) == set(programs)
    for name, config in configs.items():
        assert config.autorestart is RestartUnconditionally
        assert not config.autostart  # `up` starts the stages in order
        assert config.stdout_logfile == str(stack.var_dir / "log" / f"{name}.log")
        assert config.environment == dict(programs[name].env)
        assert config.command.split()[-2:] == ["--port", str(programs[name].port)]
    assert configs["ui"].environment["TAGLOOP_UI_UPSTREAMS"] == (
        "http://127.0.0.1:21001,http://127.0.0.1:21002"
    )
    assert configs["ui"].environment["TAGLOOP_UI_LEARNER_URL"] == "http://127.0.0.1:21010"
    assert configs["learning"].environment["TAGLOOP_DATA_DIR"] == str(stack.var_dir / "learner")
    assert configs["inference-1"].environment["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:21085"
    caches = {configs[f"inference-{n}"].environment["TAGLOOP_MODEL_CACHE_DIR"] for n in (1, 2)}
    assert len(caches) == 2  # replicas never share a download directory


@pytest.mark.parametrize("name", ['say "hi"', "100%"])
def test_a_path_supervisor_cannot_hold_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StackError, match="double quote, '%' or a newline"):
        prepare(make_stack(tmp_path / name))


def test_a_listening_port_is_reported_by_name() -> None:
    ports = Ports.from_base(free_base_port()).named()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports["ui"]))
        listener.listen()
        assert taken_ports(ports) == {"ui": ports["ui"]}
    assert taken_ports(ports) == {}


def test_reset_wipes_only_a_stack_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    with pytest.raises(StackError, match="not created by `tagloop up`"):
        reset(foreign)
    assert foreign.exists()

    stack = make_stack(tmp_path / "var")
    prepare(stack)
    (stack.var_dir / "learner").mkdir()
    (stack.var_dir / "learner" / "feedback.csv").write_text("feedback_id\n")
    assert (stack.var_dir / MARKER).exists()
    assert reset(stack.var_dir) is True
    assert not stack.var_dir.exists()
    assert reset(stack.var_dir) is False
