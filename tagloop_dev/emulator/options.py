"""Command-line options of the emulator, shared by `tagloop pubsub-emulator` and
`python -m tagloop_dev.emulator`; kept free of heavy imports so `tagloop --help` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8085, help="port (default 8085; 0 = any free)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep topics, subscriptions and unacknowledged messages here across restarts",
    )
    parser.add_argument(
        "--deny-admin",
        action="store_true",
        help="answer admin RPCs (create/update/delete) with PERMISSION_DENIED, as Pub/Sub does"
        " for the services' Terraform-granted service accounts",
    )
    parser.add_argument(
        "--allow-subscription-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="with --deny-admin: subscriptions whose id starts with PREFIX may still be"
        " created and deleted (repeatable; the inference processes' own)",
    )
    return parser
