"""Talking to a running ``mlxk2 serve`` from the CLI, with the standard library only.

:class:`ServerClient` sends JSON requests and turns every failure into an
``mlxk2.errors`` class: no answer at all is a :class:`NetworkError` (exit 2), and
an OpenAI-style error body becomes the class that declares its ``code``
(``openai_code``); a 401 is an :class:`AuthError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from typing import Any

from mlxk2.errors import AuthError, InternalError, MlxkError, NetworkError, ValidationError

DEFAULT_URL = "http://127.0.0.1:8000"


class ServerClient:
    """JSON over HTTP to one server.

    Args:
        url: The server's base URL (``http://host:port``), without ``/v1``.
        api_key: Sent as ``Authorization: Bearer``; None sends none.
        timeout: Seconds to wait for an answer (loading a large model takes a while).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError(f"Invalid server URL {url!r}: use e.g. {DEFAULT_URL}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return self._send("GET", path, None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        return self._send("POST", path, body)

    def _send(self, method: str, path: str,
              body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of a 2xx answer.

        Raises:
            NetworkError: Nothing answered, or the answer is not JSON.
            MlxkError: The server's error, by its code or status.
        """
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, self._json(response.read())
        except urllib.error.HTTPError as exc:
            raise _error_for(exc.code, self._json(exc.read(), strict=False)) from exc
        except OSError as exc:  # URLError, refused, reset, timed out
            reason = getattr(exc, "reason", exc)
            raise NetworkError(f"No mlxk2 server answered at {self.url}: {reason}") from exc

    def _json(self, raw: bytes, strict: bool = True) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            value = None
        if isinstance(value, dict):
            return value
        if strict:
            raise NetworkError(f"The answer from {self.url} is not an mlxk2 server's JSON.")
        return {}


@cache
def _classes_by_code() -> dict[str, type[MlxkError]]:
    """Each error class by the ``openai_code`` it declares, so the server's answer
    turns back into the error the server raised."""
    found: dict[str, type[MlxkError]] = {}
    pending: list[type[MlxkError]] = [MlxkError]
    while pending:
        cls = pending.pop(0)
        if cls.openai_code is not None:
            found.setdefault(cls.openai_code, cls)
        pending.extend(cls.__subclasses__())
    return found


def _error_for(status: int, body: dict[str, Any]) -> MlxkError:
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    message = str(error.get("message") or f"The server answered HTTP {status}.")
    cls = _classes_by_code().get(str(error.get("code")))
    if cls is None:
        if status == 401:
            cls = AuthError
        elif status in (400, 413, 422):
            cls = ValidationError
        elif status >= 500:
            cls = NetworkError
        else:
            cls = InternalError
    return cls(message)


def model_path(model: str, action: str = "") -> str:
    """``/v1/models/<model>[/action]``, the name quoted but its slashes kept."""
    return f"/v1/models/{urllib.parse.quote(model, safe='/')}" + (f"/{action}" if action else "")
