"""Building the spec's model object: framework, type, capabilities, size, health.

Detection reads only small files (config.json, the start of README.md and
tokenizer_config.json) so that ``list`` over a large cache stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlxk2.cache.capabilities import Capability, Framework, ModelType
from mlxk2.cache.config import context_length
from mlxk2.cache.embedding import embedding_reason
from mlxk2.cache.files import TORCH_WEIGHT_SUFFIXES, mtime
from mlxk2.cache.integrity import scan_model
from mlxk2.cache.layout import DEFAULT_ORG, ResolvedModel
from mlxk2.cache.rules import Refusal, refusal, require
from mlxk2.cache.runtime import runtime_reason
from mlxk2.errors import ModelUnhealthyError

EMBEDDING_TYPES = frozenset({
    "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert", "modernbert",
    "new", "jina_bert", "electra", "deberta", "deberta-v2",
})
SENTENCE_TRANSFORMER_FILES = ("modules.json", "sentence_bert_config.json",
                              "config_sentence_transformers.json")
VISION_TYPES = frozenset({
    "llava", "llava_next", "llava-qwen2", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "pixtral",
    "mllama", "paligemma", "idefics2", "idefics3", "smolvlm", "mistral3", "gemma3",
    "florence2", "molmo", "internvl_chat", "phi3_v", "deepseek_vl_v2", "kimi_vl", "lfm2-vl",
})
AUDIO_TYPES = frozenset({"whisper", "qwen2_audio", "voxtral", "gemma3n"})
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
_CHAT_NAME = re.compile(r"instruct|chat|-it\b|assistant", re.IGNORECASE)
_FRONT_MATTER_MLX = re.compile(r"^(library_name:\s*mlx\b|\s*-\s*mlx\s*$|tags:.*\bmlx\b)",
                               re.MULTILINE)


@dataclass(frozen=True)
class ModelInfo:
    """Raw facts about one model; renderers format them."""

    name: str
    hash: str | None
    size_bytes: int
    last_modified: float
    framework: str
    model_type: str
    capabilities: tuple[str, ...]
    health: str
    runtime_compatible: bool
    reason: str | None
    cached: bool
    context_length: int | None = None

    @property
    def healthy(self) -> bool:
        return self.health == "healthy"

    @property
    def runnable(self) -> bool:
        """Can ``run`` and ``serve`` generate text with it? (:mod:`mlxk2.cache.rules`)"""
        return self.refusal(Capability.TEXT_GENERATION) is None

    @property
    def purpose(self) -> Capability:
        """What the model is for: embeddings for an embedding model, else text generation."""
        if self.model_type == ModelType.EMBEDDING.value:
            return Capability.EMBEDDINGS
        return Capability.TEXT_GENERATION

    def refusal(self, capability: Capability | None = None) -> Refusal | None:
        """Why this model cannot serve ``capability`` (default: its :attr:`purpose`)."""
        return refusal(self, capability or self.purpose)

    @property
    def embeddable(self) -> bool:
        """Can ``embed`` and ``/v1/embeddings`` use it? (:mod:`mlxk2.cache.rules`)"""
        return self.refusal(Capability.EMBEDDINGS) is None

    @property
    def last_modified_iso(self) -> str:
        stamp = datetime.fromtimestamp(self.last_modified, tz=timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_dict(self) -> dict[str, Any]:
        """The spec's model object, field for field, plus ``context_length`` (tokens)."""
        return {
            "name": self.name,
            "hash": self.hash,
            "size_bytes": self.size_bytes,
            "last_modified": self.last_modified_iso,
            "framework": self.framework,
            "model_type": self.model_type,
            "capabilities": list(self.capabilities),
            "health": self.health,
            "runtime_compatible": self.runtime_compatible,
            "reason": self.reason,
            "cached": self.cached,
            "context_length": self.context_length,
        }


def require_usable(resolved: ResolvedModel, capability: Capability | None = None,
                   hint: str = "") -> tuple[ModelInfo, Path]:
    """Inspect a resolved model and refuse it unless it can serve ``capability``.

    The check ``run``, ``embed`` and ``serve`` make before loading: the one rule
    of :mod:`mlxk2.cache.rules`, so each refuses with the reason ``list`` shows.

    Args:
        resolved: The model picked by a spec.
        capability: What it must do (default: its :attr:`ModelInfo.purpose`).
        hint: Where to go instead, added for a model of another kind.

    Returns:
        Its facts and the folder to load.

    Raises:
        ModelUnhealthyError: the files fail the integrity check.
        ModelIncompatibleError: healthy files that cannot serve ``capability``.
    """
    info = inspect_model(resolved)
    require(info, capability or info.purpose, hint)
    if resolved.path is None:  # inspect reports this as unhealthy; kept for type narrowing
        raise ModelUnhealthyError(f"Model '{info.name}' has no snapshot", model=info.name)
    return info, resolved.path


def inspect_model(resolved: ResolvedModel) -> ModelInfo:
    """Both checks, gated as the spec says: integrity first, then runtime."""
    path = resolved.path
    if path is None:
        return _without_snapshot(resolved)
    scan = scan_model(path, boundary=resolved.repo_dir)
    config = scan.config
    names = set(scan.top_files)
    framework = detect_framework(path, names, config, resolved.repo_id)
    model_type, capabilities = detect_type(path, names, config, resolved.name, framework)
    problem = scan.first_problem()
    reason: str | None
    if problem is not None:
        runtime_ok, reason = False, problem
    else:
        if model_type is ModelType.EMBEDDING:
            reason = embedding_reason(path, names, config, framework.value)
            if reason is None:  # mlxk2's encoder loads the safetensors into MLX as they are
                framework = Framework.MLX
        else:
            reason = runtime_reason(config or {}, framework.value)
        runtime_ok = reason is None
    return ModelInfo(
        name=resolved.name,
        hash=resolved.commit,
        size_bytes=scan.total_bytes,
        last_modified=mtime(path),
        framework=framework.value,
        model_type=model_type.value,
        capabilities=tuple(c.value for c in capabilities),
        health="unhealthy" if problem else "healthy",
        runtime_compatible=runtime_ok,
        reason=reason,
        cached=resolved.cached,
        context_length=context_length(config) if config is not None else None,
    )


def _without_snapshot(resolved: ResolvedModel) -> ModelInfo:
    folder = resolved.repo_dir
    return ModelInfo(
        name=resolved.name, hash=None, size_bytes=0,
        last_modified=mtime(folder) if folder else 0.0,
        framework=Framework.UNKNOWN.value, model_type=ModelType.UNKNOWN.value,
        capabilities=(), health="unhealthy", runtime_compatible=False,
        reason="No snapshot in cache (download never completed)", cached=resolved.cached,
    )


def detect_framework(path: Path, names: set[str], config: dict[str, Any] | None,
                     repo_id: str | None) -> Framework:
    """GGUF files win; then MLX markers; then plain PyTorch-style weights."""
    if any(n.endswith(".gguf") for n in names):
        return Framework.GGUF
    if config is not None and isinstance(config.get("quantization"), dict):
        return Framework.MLX
    if _readme_says_mlx(path) or (repo_id or "").startswith(f"{DEFAULT_ORG}/"):
        return Framework.MLX
    if any(n.endswith(".npz") for n in names):
        return Framework.MLX
    if any(n.endswith(".safetensors") or n.endswith(TORCH_WEIGHT_SUFFIXES) for n in names):
        return Framework.PYTORCH
    return Framework.UNKNOWN


def detect_type(path: Path, names: set[str], config: dict[str, Any] | None, name: str,
                framework: Framework = Framework.UNKNOWN) -> tuple[ModelType, list[Capability]]:
    if config is None:
        if framework is Framework.GGUF:  # metadata lives inside the .gguf; the name tells
            if _CHAT_NAME.search(name):
                return ModelType.CHAT, [Capability.TEXT_GENERATION, Capability.CHAT]
            return ModelType.BASE, [Capability.TEXT_GENERATION]
        return ModelType.UNKNOWN, []
    arch = str(config.get("model_type") or "").lower()
    if arch in EMBEDDING_TYPES or any(f in names for f in SENTENCE_TRANSFORMER_FILES) \
            or "embed" in name.lower():
        return ModelType.EMBEDDING, [Capability.EMBEDDINGS]
    chat = _has_chat_template(path, names)
    capabilities = [Capability.TEXT_GENERATION]
    if chat:
        capabilities.append(Capability.CHAT)
    audio = arch in AUDIO_TYPES or "audio_config" in config
    if arch in VISION_TYPES or "vision_config" in config or \
            ("preprocessor_config.json" in names and not audio):
        capabilities.append(Capability.VISION)
    if audio:
        capabilities.append(Capability.AUDIO)
    return (ModelType.CHAT if chat else ModelType.BASE), capabilities


def _has_chat_template(path: Path, names: set[str]) -> bool:
    if any(f in names for f in CHAT_TEMPLATE_FILES):
        return True
    try:
        with (path / "tokenizer_config.json").open("rb") as fh:
            return b'"chat_template"' in fh.read()
    except OSError:
        return False


def _readme_says_mlx(path: Path) -> bool:
    try:
        with (path / "README.md").open("r", encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head.startswith("---"):
        return False
    front = head[3:].split("\n---", 1)[0]
    return bool(_FRONT_MATTER_MLX.search(front))
