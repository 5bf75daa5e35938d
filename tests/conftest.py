"""Shared fixtures live in tests/fixtures; each module is registered here."""

import os

# Tests never reach the real Hub; any accidental call fails fast instead of hanging.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

pytest_plugins = [
    "tests.fixtures.cli",
    "tests.fixtures.hub",
    "tests.fixtures.cache",
    "tests.fixtures.models",
    "tests.fixtures.embedding",
    "tests.fixtures.realmodel",
]
