"""``embed``: check that a model can embed, load it, and turn texts into vectors.

Nothing here prints: :func:`embed_texts` yields records as their batches finish,
so ``--format jsonl`` can stream them and ``--json`` can collect them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk2.cache.capabilities import Capability
from mlxk2.cache.inspect import ModelInfo, require_usable
from mlxk2.cache.layout import ResolvedModel
from mlxk2.errors import ValidationError
from mlxk2.resolve import resolve

if TYPE_CHECKING:
    from mlxk2.engine.embed import Encoder


def check_embeddable(spec: str, root: Path | None = None) -> tuple[ResolvedModel, ModelInfo]:
    """Resolve ``spec`` and refuse, with the reason ``list`` shows, what cannot embed.

    Raises:
        ModelNotFoundError, AmbiguousMatchError, ValidationError: from resolution.
        ModelUnhealthyError: the files fail the integrity check.
        ModelIncompatibleError: a chat or base model, or an encoder mlxk2 cannot run.
    """
    resolved = resolve(spec, root)
    info, _ = require_usable(resolved, Capability.EMBEDDINGS, hint="run generates text with it")
    return resolved, info


@dataclass(frozen=True)
class EmbeddingModel:
    """A resolved embedding model that passed the checks, and its loaded encoder."""

    resolved: ResolvedModel
    info: ModelInfo
    encoder: Encoder

    @property
    def name(self) -> str:
        return self.resolved.name


def load_encoder(path: Path, name: str | None = None) -> Encoder:
    """Bind OpenBLAS under MLX, as ``run`` and ``serve`` do, then load the encoder.

    :mod:`mlxk2.engine.embed` imports mlx, and the binding must come before that
    first import, so the module is only imported here.
    """
    from mlxk2.engine.blas import ensure_blas

    ensure_blas()
    from mlxk2.engine.embed import load_encoder as load

    return load(path, name=name)


def open_encoder(spec: str, root: Path | None = None,
                 loader: Callable[..., Encoder] = load_encoder) -> EmbeddingModel:
    """:func:`check_embeddable`, then load the folder (``loader(path, name=...)``)."""
    resolved, info = check_embeddable(spec, root)
    assert resolved.path is not None
    return EmbeddingModel(resolved, info, loader(resolved.path, name=resolved.name))


@dataclass(frozen=True)
class EmbeddingRecord:
    """One text's vector; ``truncated`` says the text was cut to the model's limit."""

    text: str
    embedding: tuple[float, ...]
    tokens: int
    truncated: bool

    @property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def norm(self) -> float:
        return float(sum(x * x for x in self.embedding) ** 0.5)

    def to_dict(self, model: str) -> dict[str, Any]:
        return {
            "text": self.text,
            "embedding": list(self.embedding),
            "metadata": {"model": model, "dimensions": len(self.embedding),
                         "content_hash": self.content_hash},
        }


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: texts per forward pass, normalisation and Matryoshka truncation."""

    batch: int = 32
    normalize: bool | None = None
    dimensions: int | None = None


def check_options(encoder: Encoder, options: EmbedOptions) -> None:
    """Raises: ValidationError for a batch size or dimension count the model cannot honour."""
    if options.batch < 1:
        raise ValidationError("--batch must be at least 1")
    if options.dimensions is not None and not 1 <= options.dimensions <= encoder.dimensions:
        raise ValidationError(f"--dimensions must be between 1 and {encoder.dimensions}, "
                              "the model's size")


def embed_texts(encoder: Encoder, texts: Iterable[str], options: EmbedOptions,
                ) -> Iterator[EmbeddingRecord]:
    """Records in input order, ``options.batch`` texts per forward pass."""
    check_options(encoder, options)
    normalize = encoder.normalize if options.normalize is None else options.normalize
    for chunk in _chunks(texts, options.batch):
        tokenized = encoder.tokenize(chunk)
        vectors = encoder.embed([t.ids for t in tokenized], normalize=normalize,
                                max_batch=options.batch)
        from mlxk2.engine.embed import matryoshka

        vectors = matryoshka(vectors, options.dimensions, normalize)
        for text, tok, vector in zip(chunk, tokenized, vectors, strict=True):
            yield EmbeddingRecord(text, tuple(float(x) for x in vector), len(tok.ids),
                                  tok.truncated)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class EmbedResult:
    """All records of one ``embed`` call, as the ``embed --json`` data."""

    model: str
    records: Sequence[EmbeddingRecord]
    normalized: bool
    max_tokens: int

    @property
    def truncated(self) -> int:
        return sum(r.truncated for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        dims = len(self.records[0].embedding) if self.records else 0
        return {
            "model": self.model,
            "dimensions": dims,
            "normalized": self.normalized,
            "count": len(self.records),
            "truncated": self.truncated,
            "max_tokens": self.max_tokens,
            "usage": {"prompt_tokens": sum(r.tokens for r in self.records)},
            "records": [r.to_dict(self.model) for r in self.records],
        }
