"""A small MLX encoder for sentence-transformers models (BERT, MiniLM, BGE, E5, XLM-R).

mlx-lm has no encoder models, and ``mlx-embeddings`` pulls in hundreds of MB of
vision and audio packages; the BERT family is small enough to write here. A
model folder in the sentence-transformers layout holds ``config.json``,
safetensors weights, ``tokenizer.json``, ``modules.json`` (the pipeline:
Transformer, Pooling, optionally Normalize), ``1_Pooling/config.json`` and
``sentence_bert_config.json`` (``max_seq_length``). Inputs are padded into one
forward pass per batch, with an attention mask, so a text embeds the same alone
or among longer ones.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxk2.cache.embedding import (
    ENCODER_TYPES,
    POSITION_OFFSET_TYPES,
    embedding_pipeline,
)
from mlxk2.errors import ModelIncompatibleError, ModelNotFoundError

#: Weight-name pieces as Hugging Face saves them, and the module names used here.
_RENAMES = (
    ("encoder.layer.", "layers."),
    ("attention.self.", "attention."),
    ("attention.output.dense.", "attention_out."),
    ("attention.output.LayerNorm.", "attention_norm."),
    ("intermediate.dense.", "ffn_in."),
    ("output.dense.", "ffn_out."),
    ("output.LayerNorm.", "ffn_norm."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
)
#: Prefixes of weights saved from a task model (``BertForMaskedLM``...) instead of the bare encoder.
_MODEL_PREFIXES = ("bert.", "roberta.", "xlm-roberta.", "model.")
_ACTIVATIONS = {
    "gelu": nn.gelu,
    "gelu_new": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
    "relu": nn.relu,
    "silu": nn.silu,
}
#: Default cap on padded tokens per forward pass (batch size × longest input).
DEFAULT_TOKEN_BUDGET = 8192


@dataclass(frozen=True)
class EncoderArgs:
    """The ``config.json`` fields a BERT-family encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    position_offset: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderArgs:
        model_type = str(config.get("model_type", "")).lower()
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position embeddings '{config['position_embedding_type']}' "
                             "are not supported")
        offset = int(config.get("pad_token_id") or 0) + 1 \
            if model_type in POSITION_OFFSET_TYPES else 0
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config["max_position_embeddings"]),
            type_vocab_size=int(config.get("type_vocab_size") or 2),
            layer_norm_eps=float(config.get("layer_norm_eps") or 1e-12),
            hidden_act=str(config.get("hidden_act") or "gelu"),
            position_offset=offset,
        )


class _Embeddings(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.position_embeddings = nn.Embedding(args.max_position_embeddings, args.hidden_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.hidden_size)
        self.norm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.offset = args.position_offset

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1]) + self.offset
        h = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        # Single-segment input: every token has type 0.
        out: mx.array = self.norm(h + self.token_type_embeddings.weight[0])
        return out


class _Attention(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.heads = args.num_attention_heads
        self.query = nn.Linear(args.hidden_size, args.hidden_size)
        self.key = nn.Linear(args.hidden_size, args.hidden_size)
        self.value = nn.Linear(args.hidden_size, args.hidden_size)

    def __call__(self, h: mx.array, mask: mx.array) -> mx.array:
        batch, length, width = h.shape
        head_dim = width // self.heads

        def split(x: mx.array) -> mx.array:
            return x.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        out = mx.fast.scaled_dot_product_attention(
            split(self.query(h)), split(self.key(h)), split(self.value(h)),
            scale=head_dim ** -0.5, mask=mask,
        )
        return out.transpose(0, 2, 1, 3).reshape(batch, length, width)


class _Layer(nn.Module):
    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.attention = _Attention(args)
        self.attention_out = nn.Linear(args.hidden_size, args.hidden_size)
        self.attention_norm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.ffn_in = nn.Linear(args.hidden_size, args.intermediate_size)
        self.ffn_out = nn.Linear(args.intermediate_size, args.hidden_size)
        self.ffn_norm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.act = _ACTIVATIONS[args.hidden_act]

    def __call__(self, h: mx.array, mask: mx.array) -> mx.array:
        h = self.attention_norm(h + self.attention_out(self.attention(h, mask)))
        out: mx.array = self.ffn_norm(h + self.ffn_out(self.act(self.ffn_in(h))))
        return out


class BertModel(nn.Module):
    """The encoder stack: token ids and a padding mask in, one hidden state per token out."""

    def __init__(self, args: EncoderArgs) -> None:
        super().__init__()
        self.embeddings = _Embeddings(args)
        self.layers = [_Layer(args) for _ in range(args.num_hidden_layers)]

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        h = self.embeddings(ids)
        # Padding keys get the dtype's most negative value: softmax gives them zero weight.
        additive = mx.where(mask[:, None, None, :], 0.0, mx.finfo(h.dtype).min).astype(h.dtype)
        for layer in self.layers:
            h = layer(h, additive)
        return h


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Hugging Face weight names to this module's names; unused heads dropped."""
    renamed = {}
    for name, value in weights.items():
        for prefix in _MODEL_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(("pooler.", "cls.", "lm_head.")) or name.endswith("position_ids"):
            continue
        for old, new in _RENAMES:
            name = name.replace(old, new)
        renamed[name] = value
    return renamed


@dataclass(frozen=True)
class Tokenized:
    """One input ready for the encoder; ``truncated`` says tokens were cut off."""

    ids: tuple[int, ...]
    truncated: bool


@dataclass
class Encoder:
    """A loaded sentence-transformers model: encoder, tokenizer and pooling pipeline."""

    model: BertModel
    tokenizer: Any
    path: Path
    config: dict[str, Any]
    pooling: str
    normalize: bool
    max_tokens: int
    dimensions: int
    pad_id: int
    load_s: float = 0.0

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @functools.cached_property
    def read_chars(self) -> int:
        """The most characters of one text that are tokenised.

        ``max_tokens`` tokens span at most ``max_tokens`` times the vocabulary's
        longest token string; four times that leaves room for the spaces and
        punctuation between them. What lies beyond would be cut off anyway, and
        tokenising megabytes only to drop them takes seconds. (A head made mostly
        of whitespace, which makes no tokens, is embedded as it is.)
        """
        widest = max(map(len, self.tokenizer.get_vocab()), default=1)
        return 4 * self.max_tokens * widest

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        """Token ids with the model's special tokens, cut to ``max_tokens``
        (texts first cut to :attr:`read_chars`)."""
        limit = self.read_chars
        encodings = self.tokenizer.encode_batch([text[:limit] for text in texts])
        return [Tokenized(tuple(e.ids), bool(e.overflowing) or len(text) > limit)
                for text, e in zip(texts, encodings, strict=True)]

    def forward(self, inputs: Sequence[Sequence[int]], *, normalize: bool | None = None,
                ) -> np.ndarray:
        """Embed inputs in one padded forward pass (call on the MLX thread).

        Args:
            inputs: Token id sequences, each at most ``max_tokens`` long and not empty.
            normalize: L2-normalise the vectors; None follows the model's pipeline.

        Returns:
            A float32 array of shape ``(len(inputs), dimensions)``.
        """
        lengths = [len(ids) for ids in inputs]
        width = max(lengths)
        padded = np.full((len(inputs), width), self.pad_id, dtype=np.int32)
        for row, ids in enumerate(inputs):
            padded[row, : len(ids)] = ids
        mask = mx.arange(width)[None, :] < mx.array(lengths)[:, None]
        hidden = self.model(mx.array(padded), mask).astype(mx.float32)
        vectors = pool(hidden, mask, self.pooling)
        if self.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        mx.eval(vectors)
        return np.array(vectors)

    def embed(self, inputs: Sequence[Sequence[int]], *, normalize: bool | None = None,
              max_batch: int = 32, token_budget: int = DEFAULT_TOKEN_BUDGET) -> np.ndarray:
        """Embed any number of inputs, longest first in batches (see :func:`plan_batches`).

        Returns:
            Vectors in the order of ``inputs``.
        """
        out = np.zeros((len(inputs), self.dimensions), dtype=np.float32)
        for group in plan_batches([len(ids) for ids in inputs], max_batch, token_budget):
            out[group] = self.forward([inputs[i] for i in group], normalize=normalize)
        return out


def pool(hidden: mx.array, mask: mx.array, mode: str) -> mx.array:
    """One vector per sequence from the token states, ignoring padding."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = mask.sum(axis=1) - 1
        return mx.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    weights = mask[..., None].astype(hidden.dtype)
    if mode == "max":
        return mx.where(weights > 0, hidden, mx.finfo(hidden.dtype).min).max(axis=1)
    if mode == "mean":
        return (hidden * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
    raise ValueError(f"unknown pooling mode {mode!r}")


def l2_normalize(vectors: mx.array) -> mx.array:
    norms = mx.sqrt((vectors * vectors).sum(axis=-1, keepdims=True))
    return vectors / mx.maximum(norms, 1e-12)


def plan_batches(lengths: Sequence[int], max_batch: int, token_budget: int) -> list[list[int]]:
    """Group input indices into forward passes, longest first, to waste little padding.

    A batch holds at most ``max_batch`` inputs and at most ``token_budget`` padded
    tokens (its size times its longest input); an input longer than the budget
    gets a batch of its own. An input shorter than half the batch's longest starts
    a new batch, so padding never more than doubles the work.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        full = len(current) == max_batch or (len(current) + 1) * longest > token_budget
        if current and (full or 2 * lengths[index] < longest):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def load_encoder(path: Path, name: str | None = None) -> Encoder:
    """Load a sentence-transformers model folder into MLX.

    Args:
        path: A folder with ``config.json``, safetensors weights and ``tokenizer.json``.
        name: The model as the user named it, for error messages.

    Raises:
        ModelNotFoundError: ``path`` is not a folder.
        ModelIncompatibleError: The architecture, pipeline or weights do not fit the encoder.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"No model folder at '{path}'")
    shown = name or str(path)
    started = time.perf_counter()
    pipeline = embedding_pipeline(path)
    if pipeline.problem is not None:
        raise ModelIncompatibleError(f"Cannot embed with '{shown}': {pipeline.problem}",
                                     model=shown)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    try:
        args = EncoderArgs.from_config(config)
        if args.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"activation '{args.hidden_act}' is not supported")
        model = BertModel(args)
        weights: dict[str, mx.array] = {}
        for file in sorted(path.glob("*.safetensors")):
            shard = mx.load(str(file))
            assert isinstance(shard, dict)  # a .safetensors file loads as a dict
            weights.update(shard)
        model.load_weights(list(sanitize(weights).items()), strict=True)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelIncompatibleError(f"Cannot load '{shown}' as a "
                                     f"{'/'.join(sorted(ENCODER_TYPES))} encoder: {exc}",
                                     model=shown) from exc
    model.eval()
    mx.eval(model.parameters())
    max_tokens = min(pipeline.max_seq_length or args.max_position_embeddings,
                     args.max_position_embeddings - args.position_offset)
    return Encoder(
        model=model, tokenizer=_load_tokenizer(path, max_tokens), path=path, config=config,
        pooling=pipeline.pooling, normalize=pipeline.normalize, max_tokens=max_tokens,
        dimensions=args.hidden_size, pad_id=int(config.get("pad_token_id") or 0),
        load_s=time.perf_counter() - started,
    )


def _load_tokenizer(path: Path, max_tokens: int) -> Any:
    """``tokenizer.json`` with our truncation and no padding (batches pad themselves)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def matryoshka(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Keep the first ``dimensions`` values, renormalised when the vectors were normalised."""
    if dimensions is None or dimensions >= vectors.shape[-1]:
        return vectors
    cut = vectors[..., :dimensions]
    if not normalize:
        return cut
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    scaled: np.ndarray = cut / np.maximum(norms, 1e-12)
    return scaled


#: This module's weight-name pieces and the Hugging Face names they stand for; a
#: weight name holds at most one of them.
_HF_PIECES = (
    ("attention_out.", "attention.output.dense."),
    ("attention_norm.", "attention.output.LayerNorm."),
    ("attention.", "attention.self."),
    ("ffn_in.", "intermediate.dense."),
    ("ffn_out.", "output.dense."),
    ("ffn_norm.", "output.LayerNorm."),
    ("embeddings.norm.", "embeddings.LayerNorm."),
)


def hf_weight_name(name: str) -> str:
    """The Hugging Face ``BertModel`` name of one of this module's weights."""
    if name.startswith("layers."):
        name = "encoder.layer." + name[len("layers."):]
    for ours, theirs in _HF_PIECES:
        if ours in name:
            return name.replace(ours, theirs, 1)
    return name
