"""Fixtures are grouped by concern in tests/fixtures/; each module is a plugin."""

pytest_plugins = [
    "tests.fixtures.keys",
    "tests.fixtures.model",
    "tests.fixtures.pubsub",
    "tests.fixtures.infra",
    "tests.fixtures.s3",
    "tests.fixtures.inference",
    "tests.fixtures.learning",
    "tests.fixtures.browser",
    "tests.fixtures.ui",
    "tests.fixtures.observability",
    "tests.fixtures.stack",
]
