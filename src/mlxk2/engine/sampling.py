"""Sampling settings, turned into mlx-lm's sampler and logits processors.

The defaults are mlx-lm's own: greedy decoding and no penalties, so that
temperature 0 reproduces raw ``mlx_lm.generate`` token for token.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxk2.errors import ValidationError

#: ``mx.random.seed`` takes an unsigned 64-bit integer.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    ``top_p`` 1.0, ``top_k`` 0 and ``min_p`` 0.0 switch those filters off; a
    ``top_k`` at or above the model's vocabulary keeps every token, so it is off
    as well (mlx-lm itself rejects it). A penalty of None is not applied at all.
    ``seed`` seeds MLX's random state before generation, so the same prompt and
    seed give the same text; it must be an integer in ``0..MAX_SEED``, the range
    ``mx.random.seed`` accepts.

    Raises:
        ValidationError: a value outside its range, or a NaN or infinite float
            (a ``ValueError`` subclass, so callers such as the server can map it
            to a client error).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, float] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = [f"{name} must be a finite number, got {value}"
                    for name, value in self._floats() if not math.isfinite(value)]
        if problems:
            raise ValidationError("; ".join(problems))
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):
            problems.append(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            problems.append(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if problems:
            raise ValidationError("; ".join(problems))

    def _floats(self) -> list[tuple[str, float]]:
        """Every float setting that is set, logit biases included, by name."""
        values = [("temperature", self.temperature), ("top_p", self.top_p),
                  ("min_p", self.min_p), ("repetition_penalty", self.repetition_penalty),
                  ("presence_penalty", self.presence_penalty),
                  ("frequency_penalty", self.frequency_penalty)]
        values += [(f"logit_bias[{k}]", v) for k, v in (self.logit_bias or {}).items()]
        return [(name, float(value)) for name, value in values if value is not None]


def make_sampler(p: SamplingParams) -> Callable[[Any], Any]:
    """mlx-lm's sampler for ``p`` (the greedy argmax when the temperature is 0).

    ``logit_bias`` is applied here rather than as a logits processor: mlx-lm runs
    processors one batch row at a time, while a sampler shared by several rows
    of a batch runs once for all of them. A sampler with a seed owns its random
    stream, so it must not be shared between requests.
    """
    if p.top_k > 0 and p.temperature > 0:
        return _once_vocab_known(p)
    return _build_sampler(p)


def _build_sampler(p: SamplingParams) -> Callable[[Any], Any]:
    from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

    if p.seed is not None and p.temperature > 0:
        sampler = _seeded_sampler(p, p.seed)
    else:
        sampler = mlx_make_sampler(temp=p.temperature, top_p=p.top_p, min_p=p.min_p,
                                   top_k=p.top_k)
    if p.logit_bias:
        sampler = _biased(sampler, p.logit_bias, renormalize=p.temperature > 0)
    return sampler


def _once_vocab_known(p: SamplingParams) -> Callable[[Any], Any]:
    """The sampler for ``p``, built at its first call, when the vocabulary width is
    known: a ``top_k`` that keeps the whole vocabulary is dropped there."""
    built: Callable[[Any], Any] | None = None

    def sample(logprobs: Any) -> Any:
        nonlocal built
        if built is None:
            keeps_all = p.top_k >= logprobs.shape[-1]
            built = _build_sampler(dataclasses.replace(p, top_k=0) if keeps_all else p)
        return built(logprobs)

    return sample


def _seeded_sampler(p: SamplingParams, seed: int) -> Callable[[Any], Any]:
    """mlx-lm's filters and categorical draw, on a random stream of the sampler's own.

    MLX's global random state is shared by every request a server batches, so
    a seed applied to it is disturbed by the others' draws. Each draw here splits
    the sampler's own key the way MLX advances its global one, so alone it draws
    what ``mx.random.seed(seed)`` and mlx-lm's sampler would.
    """
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    filters: list[Callable[[Any], Any]] = []
    if 0 < p.top_p < 1:
        filters.append(lambda x: apply_top_p(x, p.top_p))
    if p.min_p != 0:
        filters.append(lambda x: apply_min_p(x, p.min_p))
    if p.top_k > 0:
        filters.append(lambda x: apply_top_k(x, p.top_k))
    key = mx.random.key(seed)

    def sample(logprobs: Any) -> Any:
        nonlocal key
        for keep in filters:
            logprobs = keep(logprobs)
        key, draw = mx.random.split(key)
        return mx.random.categorical(logprobs * (1 / p.temperature), key=draw)

    return sample


def _biased(sampler: Callable[[Any], Any], bias: dict[int, float],
            renormalize: bool) -> Callable[[Any], Any]:
    """``sampler`` on log-probabilities shifted by ``bias``.

    Adding a bias to a row's logits or to its log-probabilities differs only by
    that row's constant. The shifted values are renormalised for a non-greedy
    sampler, whose filters (top-p, min-p) take them as log-probabilities; the
    argmax needs no renormalising.
    """
    import mlx.core as mx

    indices = mx.array(list(bias.keys()))
    values = mx.array(list(bias.values()))

    def sample(logprobs: Any) -> Any:
        shifted = logprobs.at[:, indices].add(values)
        if renormalize:
            shifted = shifted - mx.logsumexp(shifted, axis=-1, keepdims=True)
        return sampler(shifted)

    return sample


def make_logits_processors(p: SamplingParams) -> list[Callable[[Any, Any], Any]]:
    """mlx-lm's logits processors for the penalties in ``p`` (often none).

    The bias is not among them: :func:`make_sampler` applies it.
    """
    from mlx_lm.sample_utils import make_logits_processors as mlx_make_processors

    return mlx_make_processors(
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
    )
