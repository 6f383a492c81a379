"""A Pub/Sub emulator that the official google-cloud-pubsub client talks to unchanged.

Dev/test tool only (`tagloop pubsub-emulator`, or `python -m tagloop_dev.emulator`):
the services never import it; they reach it through `PUBSUB_EMULATOR_HOST`.

Modules: `broker` holds the state and delivery rules, `store` persists it
(`--data-dir`), `service` maps the gRPC methods onto the broker, `server` runs
it all (`options` are its command-line flags), and `launcher` starts it as a
child process for tests and benchmarks.
"""
