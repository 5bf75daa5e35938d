"""The single source of truth for detected model types and capabilities."""

from __future__ import annotations

from enum import Enum


class Capability(str, Enum):
    TEXT_GENERATION = "text-generation"
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    VISION = "vision"
    AUDIO = "audio"


class ModelType(str, Enum):
    CHAT = "chat"
    EMBEDDING = "embedding"
    BASE = "base"
    UNKNOWN = "unknown"


class Framework(str, Enum):
    MLX = "MLX"
    GGUF = "GGUF"
    PYTORCH = "PyTorch"
    UNKNOWN = "Unknown"
