"""Local development and test tooling: the Pub/Sub emulator, the S3 launcher, the local stack, process helpers.

Never imported by the runtime packages (tagloop, the services); production images do not contain it.
"""
