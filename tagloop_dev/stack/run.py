"""`tagloop up` in the foreground: start the plan of `tagloop_dev.stack.config` stage by stage.

Each stage's parts start together once the previous stage answers its
readiness probes (an `early` part starts with the first stage, the next
stages wait until it is alive, and it is waited for with its own); a part that supervisor gives up on, or that is not ready by
the deadline, stops the whole stack with the end of its log. SIGINT/SIGTERM
(Ctrl+C) lead to an orderly supervisord shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import requests

from tagloop.settings import env_str
from tagloop_dev.processes import Stop, stop_on_signals
from tagloop_dev.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tagloop_dev.stack.config import Program, Stack, StackError, prepare, taken_ports
from tagloop_dev.stack.supervision import FAILED_STATES, Supervisor, shutdown, spawn_supervisord


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of a part's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.25
"""Between two rounds of readiness probes: a round costs the starting parts CPU (HTTP, and
supervisord's XML-RPC for each part not ready yet) that their start-up needs more."""


class Probes:
    """Readiness checks: gRPC for the emulator, the bucket for S3, GET /readyz for services."""

    def __init__(self, stack: Stack, bucket: str) -> None:
        from tagloop.channels.registry import make_s3_client

        self.stack = stack
        self.bucket = bucket
        self._http = requests.Session()  # one kept-alive connection per part, not one per probe
        self._s3 = make_s3_client(
            stack.url(stack.ports.s3),
            access_key=DEFAULT_ACCESS_KEY,
            secret_key=DEFAULT_SECRET_KEY,
            connect_timeout=0.5,
            read_timeout=2.0,
            max_attempts=1,
        )

    def alive(self, program: Program) -> bool:
        """GET /healthz answers 200: the process has imported and loaded what it serves from."""
        try:
            return self._http.get(f"{self.stack.url(program.port)}/healthz", timeout=2.0).ok
        except requests.RequestException:
            return False

    def ready(self, program: Program) -> bool:
        try:
            if program.probe == "grpc":
                return self._grpc(f"{self.stack.host}:{program.port}")
            if program.probe == "s3":
                self._s3.head_bucket(Bucket=self.bucket)
                return True
            url = f"{self.stack.url(program.port)}/readyz"
            return self._http.get(url, timeout=2.0).status_code == 200
        except Exception:  # any failure means "not ready yet"
            return False

    @staticmethod
    def _grpc(target: str) -> bool:
        import grpc

        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
            except grpc.FutureTimeoutError:
                return False
        return True


def create_topics(stack: Stack) -> None:
    """Create the two topics once the emulator answers, before the learner and replicas start.

    They start together; a replica that subscribed before the learner had
    created the model-update topic would take a missing topic for a
    configuration error and look again only a minute later. Creating the
    topics here (as Terraform does in the cloud) removes that race; the
    services still create what is missing (TAGLOOP_PUBSUB_PROVISION).
    """
    from google.api_core.exceptions import GoogleAPICallError

    from tagloop.channels.bus import Bus  # google-cloud-pubsub: not for `tagloop --help`
    from tagloop.settings import CommonSettings

    settings = CommonSettings.from_env({**os.environ, **stack.topology_env()})
    if not settings.pubsub_provision:
        return
    # The client finds the emulator through the environment; `up` talks to this stack's only.
    os.environ["PUBSUB_EMULATOR_HOST"] = stack.topology_env()["PUBSUB_EMULATOR_HOST"]
    bus = Bus(settings.gcp_project)
    try:
        for topic in (settings.feedback_topic, settings.model_topic):
            bus.ensure_topic(topic, timeout=10.0)
    except GoogleAPICallError as error:
        raise StackError(f"cannot create the topics on the Pub/Sub emulator: {error}") from None
    finally:
        bus.close()


def _wait_stage(
    stack: Stack,
    supervisor: Supervisor,
    supervisord: subprocess.Popen[bytes],
    probes: Probes,
    stage: list[Program],
    deadline: float,
    started: float,
    out: TextIO,
    state: str = "ready",
) -> None:
    """Poll until the (started) programs of `stage` are ready (or, for state="alive", answer
    at all); StackError with the log if not."""
    probe = probes.alive if state == "alive" else probes.ready
    waiting = list(stage)
    while waiting:
        if supervisord.poll() is not None:
            raise StackError(
                f"supervisord exited with status {supervisord.returncode}:\n"
                + log_tail(stack.log_dir / "supervisord.log")
            )
        for program in list(waiting):
            if probe(program):
                waiting.remove(program)
                print(
                    f"  {program.name:<12} {state} on port {program.port}"
                    f" ({time.monotonic() - started:.1f} s)",
                    file=out,
                    flush=True,
                )
            elif supervisor.info(program.supervisor_name)["statename"] in FAILED_STATES:
                raise StackError(_failure(stack, program, "gave up restarting it"))
        if waiting and time.monotonic() > deadline:
            raise StackError(_failure(stack, waiting[0], "not ready in time"))
        if waiting:
            time.sleep(POLL_SECONDS)


def _failure(stack: Stack, program: Program, what: str) -> str:
    log = stack.log_dir / f"{program.name}.log"
    return f"{program.name}: {what}; the end of {log}:\n{log_tail(log)}"


def up(stack: Stack, timeout: float = 300.0, out: TextIO = sys.stdout) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM; 0 after a clean stop."""
    supervisor = Supervisor(stack.socket_path)
    if supervisor.running():
        print(f"up: a stack is already running from {stack.var_dir}", file=sys.stderr)
        return 1
    taken = taken_ports(stack.ports.named(), stack.host)
    if taken:
        for name, port in taken.items():
            print(f"up: port {port} ({name}) is already in use", file=sys.stderr)
        return 1
    prepare(stack)
    started = time.monotonic()
    status = 0
    with stop_on_signals(STOP_SIGNALS):
        supervisord = spawn_supervisord(stack.conf_path, stack.log_dir / "supervisord.out")
        try:
            deadline = started + timeout
            _wait_for(supervisor.running, deadline, "supervisord did not open its socket")
            probes = Probes(stack, env_str(os.environ, "TAGLOOP_S3_BUCKET", "tagloop-models"))
            programs = stack.programs()
            for stage in sorted({program.stage for program in programs}):
                # The early parts' own start first: the later stages' imports would take the
                # cores from it (see tagloop_dev.stack.config).
                early = [program for program in programs if program.early and stage > 0]
                _wait_stage(
                    stack, supervisor, supervisord, probes, early, deadline, started, out, "alive"
                )
                for program in programs:
                    if program.start_stage == stage:
                        supervisor.start(program.supervisor_name)
                members = [program for program in programs if program.stage == stage]
                _wait_stage(stack, supervisor, supervisord, probes, members, deadline, started, out)
                if stage == 0:
                    create_topics(stack)
            print(
                f"tagloop is ready at {stack.ui_url} ({time.monotonic() - started:.1f} s; "
                f"logs in {stack.log_dir}). Ctrl+C stops it.",
                file=out,
                flush=True,
            )
            supervisord.wait()
            print(f"up: supervisord exited with status {supervisord.returncode}", file=sys.stderr)
            status = 1
        except Stop as stop:
            print(f"up: {stop} received, stopping every part ...", file=out, flush=True)
        except StackError as error:
            print(f"up: {error}", file=sys.stderr)
            status = 1
        finally:
            # A second Ctrl+C must not interrupt the orderly shutdown; the
            # previous handlers come back when the block ends.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            shutdown(supervisord)
    print("up: stopped", file=out, flush=True)
    return status


def _wait_for(probe: Callable[[], bool], deadline: float, what: str) -> None:
    while not probe():
        if time.monotonic() > deadline:
            raise StackError(what)
        time.sleep(0.05)
