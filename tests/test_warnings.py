"""The suite's warning policy: a deprecation our code triggers is an error."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest


def _warner(module: str) -> Callable[[], None]:
    """A function whose warnings are attributed to ``module``, as its own code's would be."""
    namespace: dict[str, Callable[[], None]] = {}
    exec("def warn():\n    warnings.warn('old API', DeprecationWarning)\n",
         {"__name__": module, "warnings": warnings}, namespace)
    return namespace["warn"]


def test_a_deprecation_triggered_in_mlxk2_fails_the_test() -> None:
    with pytest.raises(DeprecationWarning, match="old API"):
        _warner("mlxk2.some_module")()


def test_a_third_party_deprecation_is_reported_not_raised() -> None:
    with pytest.warns(DeprecationWarning, match="old API"):
        _warner("somelib.module")()
