"""The real stack and the shared fixtures, as plugins (tests/support/)."""

pytest_plugins = [
    "tests.support.stack",
    "tests.support.claude",
    "tests.support.webhooks",
    "tests.support.cli",
]
