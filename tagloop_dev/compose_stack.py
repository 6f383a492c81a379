"""`./dev compose:up` and `./dev compose:down`: the Compose stack on a Docker engine.

`up` finds an engine (the user's, or one it starts on a root Debian machine,
tagloop_dev/docker_engine.py), builds the images and starts compose/compose.yaml
with the contract ports on 127.0.0.1, waiting until every service is healthy.
Where it had to start its own engine (no registry is reachable on such
machines) it adds compose/local.yaml, which builds everything on a local
Debian base image and replaces the pulled images with local stand-ins.
What it started is written to var/compose.json, so `down` stops exactly that:
the stack, its volumes, and the engine if `up` started it.

The published ports move with TAGLOOP_UI_PORT, TAGLOOP_REPLICA_1_PORT,
TAGLOOP_REPLICA_2_PORT, TAGLOOP_LEARNER_PORT, TAGLOOP_PROMETHEUS_PORT and
TAGLOOP_GRAFANA_PORT (defaults: the contract ports); TAGLOOP_COMPOSE_LOCAL=1
or 0 forces the local override on or off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tagloop_dev.base_image import ensure_base_image
from tagloop_dev.docker_engine import (
    SOCKET,
    Engine,
    EngineError,
    answers,
    ensure_engine,
    recorded_engine,
    stop_engine,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
LOCAL_OVERRIDE = ROOT / "compose" / "local.yaml"
STATE_FILE = ROOT / "var" / "compose.json"
DEFAULT_PROJECT = "tagloop"
# Published host ports (docs/contracts.md §6) by the variable compose.yaml reads.
PORT_VARIABLES = {
    "TAGLOOP_UI_PORT": 8080,
    "TAGLOOP_REPLICA_1_PORT": 8001,
    "TAGLOOP_REPLICA_2_PORT": 8002,
    "TAGLOOP_LEARNER_PORT": 8010,
    "TAGLOOP_PROMETHEUS_PORT": 9090,
    "TAGLOOP_GRAFANA_PORT": 3000,
}
UP_TIMEOUT = 900.0


@dataclass
class ComposeStack:
    """One Compose project: its files and variables, on one engine."""

    engine: Engine
    project: str = DEFAULT_PROJECT
    files: list[str] = field(default_factory=lambda: [str(COMPOSE_FILE)])
    variables: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = UP_TIMEOUT, stream: bool = False) -> str:
        options = ["--project-name", self.project]
        for path in self.files:
            options += ["--file", path]
        return self.engine.compose(
            *options, *args, env=self.variables, timeout=timeout, stream=stream
        )

    @property
    def local(self) -> bool:
        return str(LOCAL_OVERRIDE) in self.files

    def port(self, variable: str) -> int:
        return int(self.variables.get(variable, PORT_VARIABLES[variable]))

    def build(self, *services: str, stream: bool = False) -> None:
        self.compose("build", *services, stream=stream)

    def up(self, build: bool = False, stream: bool = False) -> None:
        """Start (`build`: rebuild the images first) and wait until every service is healthy."""
        wait = ["--wait", "--wait-timeout", str(int(UP_TIMEOUT))]
        self.compose("up", "--detach", *(["--build"] if build else []), *wait, stream=stream)

    def down(self, stream: bool = False) -> None:
        """Stop and remove the containers, networks and volumes of this project."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", stream=stream)

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(self), "engine": asdict(self.engine)}, indent=2))

    @classmethod
    def load(cls, path: Path = STATE_FILE) -> ComposeStack | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "engine": Engine(**data["engine"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None


def wants_local_images(engine: Engine, env: Mapping[str, str]) -> bool:
    """Build everything locally on an engine started here (it cannot pull), unless told."""
    forced = env.get("TAGLOOP_COMPOSE_LOCAL")
    if forced in {"0", "1"}:
        return forced == "1"
    return engine.host == f"unix://{SOCKET}"


def open_stack(
    engine: Engine,
    project: str = DEFAULT_PROJECT,
    ports: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> ComposeStack:
    """The stack on `engine`: ports from `ports`, else the environment, else the contract."""
    env = os.environ if env is None else env
    variables = {name: str(env.get(name, default)) for name, default in PORT_VARIABLES.items()}
    variables.update({name: str(port) for name, port in (ports or {}).items()})
    stack = ComposeStack(engine, project, variables=variables)
    if wants_local_images(engine, env):
        stack.files.append(str(LOCAL_OVERRIDE))
        stack.variables["TAGLOOP_BASE_IMAGE"] = ensure_base_image(engine)
    return stack


def cmd_up() -> int:
    engine = ensure_engine()
    stack = open_stack(engine)
    stack.save()  # before building: `down` must find an engine started here even if up fails
    stack.up(build=True, stream=True)
    print(
        f"tagloop (Compose) is up: UI http://127.0.0.1:{stack.port('TAGLOOP_UI_PORT')}, "
        f"learner http://127.0.0.1:{stack.port('TAGLOOP_LEARNER_PORT')}/api/status, "
        f"Prometheus http://127.0.0.1:{stack.port('TAGLOOP_PROMETHEUS_PORT')}; "
        "stop it with ./dev compose:down"
    )
    if engine.pid is not None:
        print(f"engine: DOCKER_HOST={engine.host} DOCKER_CONFIG={engine.config_dir}")
    return 0


def cmd_down() -> int:
    stack = ComposeStack.load()
    if stack is None:
        # Not started by compose:up (or already stopped): remove the default project
        # wherever it runs, but stop no engine that compose:up did not start.
        recorded = recorded_engine()
        engine = Engine(recorded.host, config_dir=recorded.config_dir) if recorded else Engine(None)
        if not answers(engine.env()):
            print("compose:down: no engine answers, nothing to stop")
            return 0
        stack = ComposeStack(engine)
    if answers(stack.engine.env()):
        stack.down(stream=True)
    stop_engine(stack.engine)  # only a dockerd compose:up started
    STATE_FILE.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tagloop_dev.compose_stack")
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        return cmd_up() if args.command == "up" else cmd_down()
    except EngineError as error:
        print(f"compose:{args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
