"""Run the emulator: `tagloop pubsub-emulator --host H --port P [--data-dir DIR]`.

One asyncio gRPC server in the foreground. SIGTERM/SIGINT stop it cleanly:
open streams are cancelled (clients reconnect to the next instance) and the
data directory is flushed before the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from pathlib import Path

import grpc

from tagloop.logs import configure_logging
from tagloop_dev.emulator.broker import Broker
from tagloop_dev.emulator.iam import DenyAdmin
from tagloop_dev.emulator.options import add_arguments
from tagloop_dev.emulator.service import PubSubService
from tagloop_dev.emulator.store import Store

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 0.1  # granularity of ack-deadline expiry and subscription TTLs
MAX_MESSAGE_BYTES = 20 * 1024 * 1024  # Pub/Sub allows 10 MB requests; leave headroom
STOP_GRACE_SECONDS = 1.0


async def _housekeeping(broker: Broker) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        now = time.monotonic()
        broker.expire_leases(now)
        broker.expire_subscriptions(now)


async def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    stop: asyncio.Event,
    deny_admin: DenyAdmin | None = None,
) -> None:
    """Serve until `stop` is set, then shut down and flush the store.

    `deny_admin` refuses admin RPCs as Pub/Sub does without admin rights.
    """
    store = Store(data_dir) if data_dir is not None else None
    broker = Broker(store)
    if store is not None:
        store.start(asyncio.get_running_loop())
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a second emulator on the same port must fail, not share
        ],
        interceptors=[deny_admin] if deny_admin is not None else None,
    )
    server.add_generic_rpc_handlers(PubSubService(broker).generic_handlers())
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    housekeeping = asyncio.create_task(_housekeeping(broker))
    log.info(
        "pubsub emulator listening on %s:%d (%s)",
        host,
        bound,
        f"data dir {data_dir}" if data_dir else "in memory",
        extra={"address": f"{host}:{bound}"},
    )
    try:
        await stop.wait()
    finally:
        log.info("pubsub emulator stopping")
        housekeeping.cancel()
        await server.stop(STOP_GRACE_SECONDS)
        if store is not None:
            store.close()
        log.info("pubsub emulator stopped")


async def _serve_until_signal(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deny = DenyAdmin(args.allow_subscription_prefix) if args.deny_admin else None
    await serve(args.host, args.port, args.data_dir, stop, deny)


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground with parsed `options`; returns the exit status."""
    configure_logging("pubsub-emulator")
    try:
        asyncio.run(_serve_until_signal(args))
    except RuntimeError as error:  # the port or the data directory is taken, a bad address
        log.error("pubsub emulator failed: %s", error)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tagloop_dev.emulator", description="Local Google Cloud Pub/Sub emulator."
    )
    raise SystemExit(run(add_arguments(parser).parse_args(argv)))
