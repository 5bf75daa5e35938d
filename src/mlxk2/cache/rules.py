"""What a model can be used for: one rule per capability, declared once.

``list``, ``run`` and ``serve`` all ask :func:`refusal`; a model they may use gets
None, any other a :class:`Refusal` that names the error and the reason ``list``
shows. A rule for another capability (embeddings, say) is one more entry in
``_RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mlxk2.cache.capabilities import Capability, ModelType
from mlxk2.errors import ModelIncompatibleError, ModelUnhealthyError

if TYPE_CHECKING:
    from mlxk2.cache.inspect import ModelInfo


@dataclass(frozen=True)
class Refusal:
    """Why a model cannot serve a capability, and which error reports it."""

    error: type[ModelUnhealthyError] | type[ModelIncompatibleError]
    reason: str
    predicate: str  # completes "Model 'x' ..."
    wrong_kind: bool = False  # a model for another capability (chat vs embeddings)

    def to_error(self, name: str) -> ModelUnhealthyError | ModelIncompatibleError:
        return self.error(f"Model '{name}' {self.predicate}", model=name, reason=self.reason)


def _unhealthy(info: ModelInfo) -> Refusal | None:
    if info.healthy:
        return None
    reason = info.reason or "unknown problem"
    return Refusal(ModelUnhealthyError, reason, f"is unhealthy: {reason}")


def _generation_refusal(info: ModelInfo) -> Refusal | None:
    if (unhealthy := _unhealthy(info)) is not None:
        return unhealthy
    if info.model_type == ModelType.EMBEDDING.value:
        return Refusal(ModelIncompatibleError, "embedding model",
                       "is an embedding model and cannot generate text", wrong_kind=True)
    if not info.runtime_compatible:
        reason = info.reason or "not runtime compatible"
        return Refusal(ModelIncompatibleError, reason, f"cannot run with mlx-lm: {reason}")
    return None


def _embedding_refusal(info: ModelInfo) -> Refusal | None:
    if (unhealthy := _unhealthy(info)) is not None:
        return unhealthy
    if info.model_type != ModelType.EMBEDDING.value:
        return Refusal(ModelIncompatibleError, f"{info.model_type} model",
                       f"is a {info.model_type} model, not an embedding model", wrong_kind=True)
    if not info.runtime_compatible:
        reason = info.reason or "not runtime compatible"
        return Refusal(ModelIncompatibleError, reason, f"cannot embed: {reason}")
    return None


_RULES: dict[Capability, Callable[[ModelInfo], Refusal | None]] = {
    Capability.TEXT_GENERATION: _generation_refusal,
    Capability.EMBEDDINGS: _embedding_refusal,
}


def refusal(info: ModelInfo, capability: Capability = Capability.TEXT_GENERATION,
            ) -> Refusal | None:
    """Why ``info`` cannot be used for ``capability``, or None when it can.

    Raises:
        KeyError: no rule is declared for ``capability``.
    """
    return _RULES[capability](info)


def require(info: ModelInfo, capability: Capability = Capability.TEXT_GENERATION,
            hint: str = "") -> None:
    """Raise the refusal's error, if there is one.

    ``hint`` (such as "use /v1/embeddings") is added to the message of a model that
    is for another capability; where to go instead is the caller's to say.

    Raises:
        ModelUnhealthyError: the files fail the integrity check.
        ModelIncompatibleError: healthy files that cannot serve ``capability``.
    """
    found = refusal(info, capability)
    if found is None:
        return
    if hint and found.wrong_kind:
        found = replace(found, predicate=f"{found.predicate}; {hint}")
    raise found.to_error(info.name)
