"""`python -m tagloop.emulator`: the same as `tagloop pubsub-emulator`."""

from tagloop.emulator.server import main

main()
