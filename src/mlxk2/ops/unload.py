"""``unload``: have a running server drop a model (after its running requests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxk2.ops._server import ServerClient, model_path


@dataclass(frozen=True)
class UnloadResult:
    """``loaded`` stays True for a busy model, which unloads once its requests end."""

    server: str
    model: str
    was_loaded: bool
    loaded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "model": self.model, "was_loaded": self.was_loaded,
                "loaded": self.loaded}


def unload_model(client: ServerClient, model: str) -> UnloadResult:
    """Raises: ModelNotFoundError, NetworkError, AuthError."""
    _, body = client.post(model_path(model, "unload"))
    return UnloadResult(client.url, str(body.get("id", model)), bool(body.get("was_loaded")),
                        bool(body.get("loaded")))
