"""A Pub/Sub emulator that the official google-cloud-pubsub client talks to unchanged.

Dev/test tool only (`tagloop pubsub-emulator`, or `python -m tagloop_dev.emulator`):
the services never import it; they reach it through `PUBSUB_EMULATOR_HOST`.

Modules: `broker` holds the delivery rules over the in-memory `state`,
`limits` the service's validation ranges (and the features refused by name),
`filters` the subscription filter grammar, `store` persists it all
(`--data-dir`), `service` maps the gRPC methods onto the broker, `server` runs
it (`options` are its command-line flags), and `launcher` starts it, or
Google's emulator, as a child process for tests and benchmarks. Features and
known differences: docs/emulator.md.
"""
