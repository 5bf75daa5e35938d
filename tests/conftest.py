"""Shared fixtures live in tests/fixtures; each module is registered here."""

import os

# Tests never reach the real Hub; any accidental call fails fast instead of hanging.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
# The BLAS binding is per process and must precede the first mlx import, which in
# this process depends on test order: in-process tests run on stock MLX, and the
# binding is tested in subprocesses (tests/engine/test_blas.py).
os.environ.setdefault("MLXK2_BLAS", "0")

pytest_plugins = [
    "tests.fixtures.cli",
    "tests.fixtures.hub",
    "tests.fixtures.cache",
    "tests.fixtures.models",
    "tests.fixtures.embedding",
    "tests.fixtures.realmodel",
]
