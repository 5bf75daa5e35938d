"""``ps``: the models a running server has loaded, and when each unloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxk2.errors import NetworkError
from mlxk2.ops._server import ServerClient


@dataclass(frozen=True)
class ServedModel:
    """A loaded model as the server reports it (``/v1/ps`` item).

    ``keep_alive_seconds`` is None when it never unloads; ``expires_at`` (ISO 8601
    UTC) is None while requests use it or when it never unloads.
    """

    name: str
    memory_bytes: int
    size_bytes: int
    context_length: int | None
    capabilities: tuple[str, ...]
    active_requests: int
    queued_requests: int
    keep_alive_seconds: float | None
    expires_at: str | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ServedModel:
        """Raises: NetworkError: the item lacks a field (not an mlxk2 server)."""
        try:
            return cls(
                name=str(item["id"]),
                memory_bytes=int(item["memory_bytes"]),
                size_bytes=int(item["size_bytes"]),
                context_length=item["context_length"],
                capabilities=tuple(item["capabilities"]),
                active_requests=int(item["active_requests"]),
                queued_requests=int(item["queued_requests"]),
                keep_alive_seconds=item["keep_alive_seconds"],
                expires_at=item["expires_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkError(f"Unexpected model item from the server: {exc!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "size_bytes": self.size_bytes,
            "context_length": self.context_length,
            "capabilities": list(self.capabilities),
            "active_requests": self.active_requests,
            "queued_requests": self.queued_requests,
            "keep_alive_seconds": self.keep_alive_seconds,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class LoadedList:
    server: str
    models: tuple[ServedModel, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "models": [m.to_dict() for m in self.models],
                "count": len(self.models)}


def loaded_models(client: ServerClient) -> LoadedList:
    """Raises: NetworkError, AuthError: no server, or the key was refused."""
    _, body = client.get("/v1/ps")
    items = body.get("data")
    if not isinstance(items, list):
        raise NetworkError(f"The answer from {client.url} has no model list.")
    return LoadedList(client.url, tuple(ServedModel.from_item(item) for item in items))
