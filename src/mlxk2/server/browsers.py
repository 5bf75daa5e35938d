"""What a web page may ask of the server: the ``Origin`` and ``Content-Type`` rules.

A page on another site can send "simple" requests (a form post, a ``text/plain``
fetch) to a server on the user's machine without any CORS preflight; it cannot
read the answers, but it can make the server generate, or load and unload
models. So every browser request, which carries an ``Origin`` header, must come
from the server's own pages or from an origin given with ``--cors-origin``, and
a POST body must be declared as JSON. Clients that are not browsers send no
``Origin`` and are unaffected.

On a loopback address the ``Host`` header must name loopback as well: a page
that points its own hostname at 127.0.0.1 (DNS rebinding) is same-origin with
itself, and only the hostname gives it away.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from mlxk2.server.errors import ApiError, ForbiddenOriginError, UnsupportedMediaTypeError

#: Origins for ``--cors-origin *``: any page may call the server.
ANY_ORIGIN = "*"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(scope: Any, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value).decode("latin-1")
    return None


class BrowserGate:
    """Refuses requests from pages the server does not trust, and POST bodies not
    declared as JSON.

    Args:
        allowed_origins: ``--cors-origin`` values; ``*`` allows every origin.
        bind_host: The address the server listens on; on loopback the ``Host``
            header must name loopback too.
    """

    def __init__(self, allowed_origins: tuple[str, ...], bind_host: str) -> None:
        self._any = ANY_ORIGIN in allowed_origins
        self._allowed = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._loopback_only = is_loopback(bind_host)

    def check(self, scope: Any) -> ApiError | None:
        """The error to answer with, or None when the request may pass."""
        host = _header(scope, b"host")
        if self._loopback_only and host is not None and not is_loopback(_hostname(host)):
            return ForbiddenOriginError(
                f"Host '{host}' is not this server: it listens on loopback only.")
        method = scope.get("method", "GET")
        origin = _header(scope, b"origin")
        if origin is not None and method != "OPTIONS" and not self._trusts(origin, host, scope):
            return ForbiddenOriginError(
                f"Requests from web pages at {origin} are not allowed; start the server "
                "with --cors-origin to allow an origin.")
        if method == "POST" and _has_body(scope) and not _is_json(_header(scope, b"content-type")):
            return UnsupportedMediaTypeError(
                "POST bodies must be sent as 'Content-Type: application/json'.")
        return None

    def _trusts(self, origin: str, host: str | None, scope: Any) -> bool:
        origin = origin.rstrip("/").lower()
        if self._any or origin in self._allowed:
            return True
        own = f"{scope.get('scheme', 'http')}://{host}".lower() if host else None
        return origin == own


def _hostname(host: str) -> str:
    """``Host`` header without its port (``[::1]:8000`` gives ``::1``)."""
    return urlsplit(f"//{host}").hostname or host


def _has_body(scope: Any) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() != "0"
    return _header(scope, b"transfer-encoding") is not None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"
