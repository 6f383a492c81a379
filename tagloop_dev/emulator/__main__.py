"""`python -m tagloop_dev.emulator`: the same as `tagloop pubsub-emulator`."""

from tagloop_dev.emulator.server import main

main()
