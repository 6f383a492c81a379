"""The `tagloop` command (contracts §1): one small function per subcommand.

Each subcommand imports what it needs lazily so that `tagloop --help` and the
light commands stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagloop.errors import TagloopError
from tagloop.logs import configure_logging


def cmd_train(args: argparse.Namespace) -> int:
    from tagloop.domain.bundle import save_bundle, sha256_file
    from tagloop.domain.data import load_labeled
    from tagloop.domain.model import TagModel

    data = load_labeled(args.data)
    started = time.perf_counter()
    model = TagModel(C=args.C).fit(data.titles, data.tags)
    seconds = time.perf_counter() - started
    metadata = save_bundle(
        model,
        args.out,
        {"fit_seconds": round(seconds, 3), "training_data_sha256": sha256_file(args.data)},
    )
    print(
        f"trained on {len(data)} rows ({data.skipped or 'none'} skipped) in {seconds:.1f} s: "
        f"{metadata['n_tags']} tags, {metadata['n_features']} features -> {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tagloop.domain.bundle import load_bundle
    from tagloop.domain.data import load_labeled
    from tagloop.domain.evaluation import evaluate

    model, _ = load_bundle(args.model)
    data = load_labeled(args.data)
    report = evaluate(model, data.titles, data.tags)
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            print(f"{name:>24}  {value if value is None else round(value, 4)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tagloop.domain.bundle import load_bundle

    model, metadata = load_bundle(args.model)
    for title, prediction in zip(args.titles, model.predict(args.titles), strict=True):
        scores = [{"tag": tag, "score": score} for tag, score in prediction.scores[: args.top]]
        print(
            json.dumps(
                {
                    "title": title,
                    "tags": prediction.tags,
                    "scores": scores,
                    "model_version": metadata.get("version"),
                }
            )
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    import os

    from learning_service.backup import BACKUP_KEY, restore
    from tagloop.channels.registry import Registry
    from tagloop.settings import CommonSettings, data_path

    data_dir = args.data_dir or data_path(os.environ, "TAGLOOP_DATA_DIR", Path("var/learner"))
    registry = Registry.from_settings(CommonSettings.from_env())
    rows = restore(registry, data_dir, force=args.force, version_id=args.version_id)
    print(
        f"restored {rows} feedback rows from s3://{registry.bucket}/{BACKUP_KEY} into {data_dir}; "
        "start the learner: Pub/Sub redelivers what was not acknowledged",
        file=sys.stderr,
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from tagloop.domain.signing import generate_key_files

    if args.private_key.exists():
        print(f"tagloop keygen: {args.private_key} exists; not overwriting a key", file=sys.stderr)
        return 2
    public = generate_key_files(args.private_key)
    print(
        f"private key (the learner's TAGLOOP_MODEL_SIGNING_KEY_FILE, mode 0600): "
        f"{args.private_key}\npublic key (replicas' TAGLOOP_MODEL_PUBLIC_KEYS_FILE): {public}",
        file=sys.stderr,
    )
    return 0


SERVICES = {
    # service name -> module whose `run(host, port) -> int` serves it in the foreground
    "learning": "learning_service.serve",
    "inference": "inference_service.serve",
    "ui": "frontend.serve",
}
DEFAULT_PORTS = {"learning": 8010, "inference": 8001, "ui": 8080}


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib
    import os

    from tagloop.settings import env_int, env_str

    host = args.host or env_str(os.environ, "TAGLOOP_HOST", "127.0.0.1")
    port = args.port or env_int(
        os.environ, "TAGLOOP_PORT", DEFAULT_PORTS[args.service], minimum=1, maximum=65535
    )
    run: Callable[[str, int], int] = importlib.import_module(SERVICES[args.service]).run
    return run(host, port)


def cmd_pubsub_emulator(args: argparse.Namespace) -> int:
    from tagloop_dev.emulator.server import run

    return run(args)


def cmd_s3_server(args: argparse.Namespace) -> int:
    from tagloop_dev.s3server import run

    return run(args)


def cmd_up(args: argparse.Namespace) -> int:
    from tagloop_dev.stack.config import run_up

    return run_up(args)


def cmd_reset(args: argparse.Namespace) -> int:
    from tagloop_dev.stack.config import run_reset

    return run_reset(args)


def cmd_models(args: argparse.Namespace) -> int:
    from tagloop.learner_client import LearnerClient

    client = LearnerClient.from_env()
    if args.action == "list":
        current, versions = client.models()
        if args.json:
            print(json.dumps({"current_version": current, "models": versions}))
        else:
            print("\n".join(_model_rows(current, versions)))
        return 0
    if args.action == "show":
        print(json.dumps(client.show(args.version), indent=2))
        return 0
    if args.action == "rollout":
        print(json.dumps(client.rollout(), indent=2))
        return 0
    if args.action == "stage":
        print(json.dumps(client.stage(args.version, args.stage, args.reason)))
        return 0
    result = client.promote(args.version) if args.action == "promote" else client.rollback()
    print(json.dumps({"current_version": result["version"], "decision": result["decision"]}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from learning_service.export import export

    store = args.data_dir / "feedback.csv"
    count = export(store, args.out, validated_only=args.validated_only)
    which = "validated-set corrections" if args.validated_only else "corrections"
    print(f"exported {count} {which} from {store} to {args.out}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from collections import Counter

    from tagloop.replay import replay

    def progress(done: int, statuses: Counter[int]) -> None:
        if done % 50 == 0:
            print(f"\rreplayed {done} ({statuses[202]} accepted)", end="", file=sys.stderr)

    statuses = replay(args.file, args.url, progress)
    total = sum(statuses.values())
    print(f"\rreplayed {total}: " + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())))
    return 0 if set(statuses) <= {202} else 1


def _model_rows(current: str | None, versions: list[dict[str, Any]]) -> list[str]:
    """One line per version, newest first: marker, version, F1 macro, decision."""
    rows = [f"  {'VERSION':<28} {'F1 MACRO':>8}  {'ROWS':>7}  DECISION"]
    for meta in versions:
        f1 = (meta.get("metrics") or {}).get("f1_macro")
        shown_f1 = "-" if f1 is None else format(f1, ".4f")  # a version may lack metrics
        decision = meta.get("decision") or {}
        verdict = "promoted" if decision.get("promoted") else "rejected"
        rows.append(
            f"{'*' if meta.get('version') == current else ' '} {meta.get('version', '?'):<28} "
            f"{shown_f1:>8}  {meta.get('training_rows', ''):>7}  "
            f"{verdict}: {decision.get('reason', '')}"
        )
    return rows


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "keygen": cmd_keygen,
    "models": cmd_models,
    "export": cmd_export,
    "replay": cmd_replay,
    "pubsub-emulator": cmd_pubsub_emulator,
    "s3-server": cmd_s3_server,
    "up": cmd_up,
    "reset": cmd_reset,
    "restore": cmd_restore,
}


def add_dev_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the local-stack subcommands when the dev tooling is installed.

    `tagloop_dev` lives beside the runtime packages in a checkout but is not in
    the production images, so there the CLI simply has no `up`, `reset`,
    `pubsub-emulator` or `s3-server`.
    """
    try:
        from tagloop_dev.emulator.options import add_arguments as add_emulator_arguments
        from tagloop_dev.s3server import add_arguments as add_s3_server_arguments
        from tagloop_dev.stack.config import add_arguments as add_stack_arguments
    except ImportError:
        return
    add_emulator_arguments(
        sub.add_parser("pubsub-emulator", help="run the local Pub/Sub emulator in the foreground")
    )
    add_s3_server_arguments(
        sub.add_parser("s3-server", help="run a local S3 server (SeaweedFS) in the foreground")
    )
    add_stack_arguments(
        sub.add_parser("up", help="run the whole local stack under supervisor until Ctrl+C"),
        up=True,
    )
    add_stack_arguments(
        sub.add_parser("reset", help="wipe the local stack's state (./var)"), up=False
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model bundle from a labelled TSV file")
    train.add_argument("--data", required=True, type=Path, help="TSV with title and tags columns")
    train.add_argument("--out", required=True, type=Path, help="directory for the bundle")
    train.add_argument("--C", type=float, default=0.1, help="SVM regularisation (default 0.1)")

    evaluate = sub.add_parser("evaluate", help="score a model bundle on a labelled TSV file")
    evaluate.add_argument("--model", required=True, type=Path)
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    predict = sub.add_parser("predict", help="tag titles with a model bundle (JSON lines)")
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--top", type=int, default=5, help="scores to print per title")
    predict.add_argument("titles", nargs="+", metavar="TITLE")

    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", help="bind address (default: $TAGLOOP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $TAGLOOP_PORT or the service's)")
    restore = sub.add_parser(
        "restore", help="rebuild the learner's feedback.csv from its backup in the bucket"
    )
    restore.add_argument(
        "--data-dir", type=Path, help="the learner's data directory (default $TAGLOOP_DATA_DIR)"
    )
    restore.add_argument("--force", action="store_true", help="replace a feedback.csv with rows")
    restore.add_argument(
        "--version-id", default="", help="an older copy (the bucket keeps noncurrent versions)"
    )
    keygen = sub.add_parser(
        "keygen", help="create the learner's Ed25519 model-signing key and <key>.pub beside it"
    )
    keygen.add_argument("private_key", type=Path, metavar="PRIVATE_KEY_FILE")
    models = sub.add_parser(
        "models",
        help="list, show, promote, stage or roll back model versions through the learner's API "
        "($TAGLOOP_LEARNER_URL, $TAGLOOP_ADMIN_TOKEN)",
    )
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every version, newest first (* marks the current)")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    actions.add_parser("show", help="one version's metadata").add_argument("version")
    actions.add_parser("promote", help="make a stored version current").add_argument("version")
    actions.add_parser("rollback", help="return to the promoted version before the current one")
    actions.add_parser("rollout", help="the candidate in rollout, its stage, evidence and history")
    staging = actions.add_parser(
        "stage", help="move a version to a rollout stage (shadow, canary, full, rolled_back)"
    )
    staging.add_argument("version")
    staging.add_argument("stage", choices=("shadow", "canary", "full", "rolled_back"))
    staging.add_argument("--reason", default="changed by an operator", help="recorded with it")
    export = sub.add_parser(
        "export", help="write the learner's stored corrections to a CSV or Parquet file"
    )
    export.add_argument("--out", required=True, type=Path, help="FILE.csv or FILE.parquet")
    export.add_argument(
        "--validated-only",
        action="store_true",
        help="only the corrections behind the validated test set (docs/data.md)",
    )
    export.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TAGLOOP_DATA_DIR", "var/learner")),
        help="the learner's data directory (default: $TAGLOOP_DATA_DIR or var/learner)",
    )
    replay = sub.add_parser("replay", help="send an exported file through the public API")
    replay.add_argument("file", type=Path)
    replay.add_argument(
        "--url",
        default=os.environ.get("TAGLOOP_API_URL", "http://127.0.0.1:8080"),
        help="the UI or a replica (default: $TAGLOOP_API_URL or the local stack's UI)",
    )
    add_dev_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging("cli")
    args = build_parser().parse_args(argv)

    try:
        return COMMANDS[args.command](args)
    except TagloopError as error:
        print(f"tagloop {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
