"""API-key check for ``/v1/*`` and ``/metrics``: ``Authorization: Bearer`` or ``x-api-key``."""

from __future__ import annotations

import hmac
from typing import Any

from mlxk2.server.errors import AuthenticationError


class ApiKeyGate:
    """Compares the request's key with the configured one in constant time.

    The key comes as ``Authorization: Bearer <key>`` (OpenAI clients) or as
    ``x-api-key: <key>`` (Anthropic clients). With no key configured every
    request passes.
    """

    def __init__(self, api_key: str | None) -> None:
        self._key = api_key.encode() if api_key else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, scope: Any) -> AuthenticationError | None:
        """The error to answer with, or None when the request may pass."""
        if self._key is None:
            return None
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
            if name == b"x-api-key":
                header = b"Bearer " + value
        scheme, _, token = header.partition(b" ")
        if not header:
            return AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
            return AuthenticationError("Invalid API key.")
        return None
