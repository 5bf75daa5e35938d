"""``load``: have a running server load a model now, optionally with a keep-alive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxk2.ops._server import ServerClient, model_path
from mlxk2.ops.ps import ServedModel


@dataclass(frozen=True)
class LoadResult:
    server: str
    model: ServedModel

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "model": self.model.to_dict()}


def load_model(client: ServerClient, model: str, keep_alive: str | None = None) -> LoadResult:
    """Args:
        client: The server.
        model: Any name a completion request accepts.
        keep_alive: A duration (``30m``, ``never``, ``0``) the server parses.

    Raises:
        ModelNotFoundError, ModelIncompatibleError, ValidationError, NetworkError, AuthError.
    """
    body = None if keep_alive is None else {"keep_alive": keep_alive}
    _, item = client.post(model_path(model, "load"), body)
    return LoadResult(client.url, ServedModel.from_item(item))
