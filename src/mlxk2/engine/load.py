"""Load a model and tokenizer with mlx-lm from a local folder, never from the Hub."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxk2.cache.config import context_length
from mlxk2.cache.layout import snapshot_repo_id
from mlxk2.errors import MlxkError, ModelIncompatibleError, ModelNotFoundError, ModelUnhealthyError

if TYPE_CHECKING:
    from mlxk2.engine.blas import BlasStatus
    from mlxk2.engine.dtype import DtypeChoice

#: Tokens that end an assistant turn in common chat formats. gpt-oss's ``<|end|>``
#: only closes a channel message, so it counts only without harmony channels.
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|return|>",
    "<|end_of_text|>",
    "</s>",
)
_PHI_END = "<|end|>"
_HARMONY_CHANNEL = "<|channel|>"
#: Special tokens the reasoning parser reads, so they stay in the text stream.
REASONING_TOKENS = frozenset(
    {"<think>", "</think>", "<|channel|>", "<|message|>", "<|end|>", "<|start|>"}
)
#: transformers' tokenizer logger; its "sequence length is longer than the specified
#: maximum" warning duplicates the context check that generation reports itself.
_TOKENIZER_LOGGER = "transformers.tokenization_utils_base"


@dataclass
class LoadedModel:
    """A model ready for :func:`mlxk2.engine.generate.generate`.

    ``stop_token_ids`` are the EOS ids plus end-of-turn tokens in the vocab;
    the tokenizer's ``eos_token_ids`` is set to the same set, so mlx-lm stops
    there too. ``hidden_tokens`` maps other special token ids to their text,
    which generation removes from the output. ``max_token_chars`` is the length
    of the vocabulary's longest token string (0: unknown), which bounds the text
    one token can stand for.
    """

    model: Any
    tokenizer: Any
    path: Path
    config: dict[str, Any]
    context_length: int | None
    stop_token_ids: frozenset[int]
    hidden_tokens: dict[int, str] = field(default_factory=dict)
    load_s: float = 0.0
    max_token_chars: int = 0
    cpu_dtype: DtypeChoice | None = None
    blas: BlasStatus | None = None


def stop_token_ids(tokenizer: Any) -> frozenset[int]:
    """EOS ids known to mlx-lm plus every end-of-turn token the vocab has."""
    ids = set(tokenizer.eos_token_ids)
    vocab = tokenizer.get_vocab()
    names = list(END_OF_TURN_TOKENS)
    if _HARMONY_CHANNEL not in vocab:
        names.append(_PHI_END)
    ids.update(vocab[name] for name in names if name in vocab)
    return frozenset(ids)


def hidden_special_tokens(tokenizer: Any, stops: frozenset[int]) -> dict[int, str]:
    """Special tokens that are neither stops nor reasoning markers, by id."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    hidden = {
        int(i): tok.content
        for i, tok in decoder.items()
        if getattr(tok, "special", False) and tok.content not in REASONING_TOKENS
    }
    return {i: text for i, text in hidden.items() if i not in stops}


def display_name(path: Path) -> str:
    """``org/name`` for a cache snapshot folder (never its hash), else the path as given."""
    return snapshot_repo_id(path) or str(path)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text, cut to ``limit`` characters."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0].strip().rstrip(":")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _tokenizer_error(path: Path, shown: str, exc: Exception) -> MlxkError:
    """Unhealthy when tokenizer.json is broken, else incompatible; both name the file."""
    from mlxk2.cache.integrity import TOKENIZER_JSON, tokenizer_document_problem

    source = path / TOKENIZER_JSON
    if source.is_file():
        try:
            problem = tokenizer_document_problem(source.read_bytes())
        except OSError as read_error:
            problem = f"{TOKENIZER_JSON} unreadable: {read_error.strerror}"
        if problem is not None:
            return ModelUnhealthyError(f"Cannot load '{shown}': {problem}", model=shown)
    named = next((f for f in ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json")
                  if (path / f).exists()), "tokenizer_config.json")
    return ModelIncompatibleError(
        f"Cannot load the tokenizer of '{shown}' from {named}: {_first_line(exc)}", model=shown)


def load_model(path: Path, name: str | None = None,
               shard: Callable[[Any], None] | None = None, *, cpu_dtype: str = "native",
               threads: int | None = None) -> LoadedModel:
    """Load weights and tokenizer from a local model folder with mlx-lm.

    Args:
        path: A snapshot or workspace folder holding ``config.json``, safetensors
            weights and tokenizer files.
        name: The model as the user named it, for error messages (default: the
            repo id of a cache snapshot, else ``path`` as given).
        shard: Splits the model over ranks before its weights are read (see
            :func:`mlxk2.engine.distributed.sharder`), so each rank reads only its part.
        cpu_dtype: ``native``, ``float32`` or ``auto`` (see :mod:`mlxk2.engine.dtype`).
        threads: OpenBLAS threads (see :func:`mlxk2.engine.blas.ensure_blas`).

    Returns:
        The loaded model with its stop tokens and context length.

    Raises:
        ModelNotFoundError: ``path`` is not an existing folder (no Hub fallback).
        ModelIncompatibleError: mlx-lm cannot build or load the model, or its
            tokenizer (the message names the file).
        ModelUnhealthyError: ``tokenizer.json`` is not valid JSON or not a tokenizer.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"No model folder at '{path}'")
    started = time.perf_counter()
    logging.getLogger(_TOKENIZER_LOGGER).setLevel(logging.ERROR)
    from mlxk2.engine.blas import ensure_blas

    blas = ensure_blas(threads)  # before mlx is first imported
    from mlx_lm.utils import load_model as mlx_load_model
    from mlx_lm.utils import load_tokenizer

    from mlxk2.engine.dtype import apply_cpu_dtype
    from mlxk2.engine.fused import fuse_cpu_ops

    shown = name or display_name(path)
    try:
        model, config = mlx_load_model(path, lazy=shard is not None)
        if shard is not None:
            import mlx.core as mx

            shard(model)
            mx.eval(model.parameters())
    except (TypeError, AttributeError, ValueError, KeyError, RuntimeError, OSError) as exc:
        # A config mlx-lm's model classes cannot build, or weights that do not fit it.
        raise ModelIncompatibleError(
            f"mlx-lm cannot load '{shown}': {_first_line(exc)}", model=shown
        ) from exc
    try:
        # mlx-lm's load_tokenizer has no type hints.
        tokenizer = load_tokenizer(  # type: ignore[no-untyped-call]
            path, eos_token_ids=config.get("eos_token_id")
        )
    except Exception as exc:  # the tokenizers library raises bare Exception for a bad file
        raise _tokenizer_error(path, shown, exc) from exc
    choice = apply_cpu_dtype(model, cpu_dtype, blas_active=blas.active)
    fuse_cpu_ops(model)
    stops = stop_token_ids(tokenizer)
    tokenizer.eos_token_ids = stops
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=path,
        config=config,
        context_length=context_length(config),
        stop_token_ids=stops,
        hidden_tokens=hidden_special_tokens(tokenizer, stops),
        load_s=time.perf_counter() - started,
        max_token_chars=max(map(len, tokenizer.get_vocab()), default=0),
        cpu_dtype=choice,
        blas=blas,
    )
