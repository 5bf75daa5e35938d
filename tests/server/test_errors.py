"""Library errors reach HTTP clients with the status and code declared on their class."""

from __future__ import annotations

import pytest

from mlxk2 import errors
from mlxk2.server.errors import INTERNAL_MESSAGE, to_status_and_body


@pytest.mark.parametrize("cls, status, code", [
    (errors.ModelNotFoundError, 404, "model_not_found"),
    (errors.AmbiguousMatchError, 400, "ambiguous_model"),
    (errors.ModelUnhealthyError, 400, "model_unhealthy"),
    (errors.ModelIncompatibleError, 400, "model_incompatible"),
    (errors.ValidationError, 400, "invalid_value"),
    (errors.ModelTooLargeError, 507, "model_too_large"),
])
def test_library_errors_map_to_their_declared_status_and_openai_body(cls, status, code) -> None:
    exc = cls("what went wrong")
    assert (exc.http_status, exc.openai_code) == (status, code)
    assert to_status_and_body(exc) == (status, {"error": {
        "message": "what went wrong", "type": exc.openai_type, "param": None, "code": code}})


def test_model_too_large_is_model_incompatible_for_the_cli() -> None:
    exc = errors.ModelTooLargeError("too big")
    assert isinstance(exc, errors.ModelIncompatibleError)
    assert (exc.error_type, exc.exit_code) == ("model_incompatible", 1)


@pytest.mark.parametrize("exc", [errors.DownloadFailedError("x"), RuntimeError("/secret/path")])
def test_errors_without_an_http_code_are_a_500_that_reveals_nothing(exc) -> None:
    status, body = to_status_and_body(exc)
    assert status == 500
    assert body["error"]["message"] == INTERNAL_MESSAGE
