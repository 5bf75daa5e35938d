"""The generation core: one model's continuous batch over mlx-lm's ``BatchGenerator``.

``serve`` keeps one :class:`ModelBatch` per loaded model on its MLX thread and
lets requests join and leave it between decode steps; ``run`` drives one the
same way, a request at a time (:func:`mlxk2.engine.generate.generate`). Each
request gets its own :class:`~mlxk2.engine.pipeline.TokenPipeline`, and its
events go to the sink it was added with. Only one thread may use a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlxk2.engine.events import Aborted, Event
from mlxk2.engine.pipeline import Token, TokenPipeline

if TYPE_CHECKING:
    from mlxk2.engine.load import LoadedModel
    from mlxk2.engine.sampling import SamplingParams

#: Prompts prefilled per step. Prefill cost grows with prompt tokens whether or not
#: prompts share a step, so taking them one per step lets each request start
#: decoding as soon as its own prompt is done (lower median time to first token);
#: decoding is where batching pays.
PREFILL_BATCH = 1

#: Where one request's events go; called on the batch's thread.
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to run: tokens in, limits and sampling for this request only.

    ``split_reasoning`` False leaves ``<think>`` text in the content (raw
    completions); ``start_in_reasoning`` says the prompt already opened it.
    """

    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams
    stops: tuple[str, ...] = ()
    split_reasoning: bool = True
    start_in_reasoning: bool = False


@dataclass
class _Live:
    """A running request: its pipeline and where its events go."""

    pipeline: TokenPipeline
    sink: Sink


class ModelBatch:
    """One model's running batch.

    Args:
        loaded: The model.
        max_batch: Sequences decoded together.
        prompt_cache: Finished requests whose KV caches are kept for reuse (0: none).
    """

    def __init__(self, loaded: LoadedModel, max_batch: int, prompt_cache: int) -> None:
        from mlx_lm.generate import BatchGenerator

        from mlxk2.engine.prompt_cache import PromptCache

        self.loaded = loaded
        self.prompt_cache = PromptCache(prompt_cache)
        stop_tokens = [[t] for t in sorted(loaded.stop_token_ids)]
        # mlx-lm ships no type hints; the generator is used through its documented methods.
        self._generator: Any = BatchGenerator(
            loaded.model,
            stop_tokens=stop_tokens or None,
            completion_batch_size=max_batch,
            prefill_batch_size=PREFILL_BATCH,
        )
        self._live: dict[int, _Live] = {}
        # Requests with equal settings share one sampler object, which lets the
        # generator sample the whole batch in one call instead of row by row.
        self._samplers: dict[tuple[Any, ...], Any] = {}

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def add(self, request: GenerationRequest, sink: Sink) -> int:
        """Queue a request into the running batch; it joins at the next step.

        Returns:
            The request's id in this batch, for :meth:`cancel`.
        """
        from mlxk2.engine.sampling import make_logits_processors

        prompt = request.prompt_tokens
        cache, cached = self.prompt_cache.lookup(prompt)
        live = _Live(TokenPipeline(self.loaded, request, cached), sink)
        (uid,) = self._generator.insert(
            [prompt[cached:]],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            max_tokens=[request.max_tokens],
            samplers=[self._sampler_for(request.sampling)],
            logits_processors=[make_logits_processors(request.sampling)],
        )
        self._live[uid] = live
        return int(uid)

    def _sampler_for(self, p: SamplingParams) -> Any:
        from mlxk2.engine.sampling import make_sampler

        if p.seed is not None and p.temperature > 0:
            return make_sampler(p)  # it owns a random stream: never shared
        if not self._live:
            self._samplers.clear()  # only running requests' samplers are worth keeping
        key = (p.temperature, p.top_p, p.min_p, p.top_k,
               tuple(sorted((p.logit_bias or {}).items())))
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = make_sampler(p)
        return sampler

    def cancel(self, uid: int) -> None:
        """Drop a request, e.g. after a disconnect; its slot is free at the next step."""
        if self._live.pop(uid, None) is not None:
            self._generator.remove([uid])

    def abort_all(self, error: BaseException) -> None:
        """End every running request with an :class:`Aborted` event carrying ``error``."""
        for uid, live in list(self._live.items()):
            self._generator.remove([uid])
            live.sink(Aborted(error))
        self._live.clear()

    def step(self) -> None:
        """Run one prefill/decode step and hand each request the events it decides."""
        _, responses = self._generator.next()
        for response in responses:
            live = self._live.get(response.uid)
            if live is None:
                continue
            if response.finish_reason is not None:
                self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            token = Token(response.token, response.finish_reason, response.logprobs)
            self._deliver(response.uid, live, token)

    def _deliver(self, uid: int, live: _Live, token: Token) -> None:
        events = live.pipeline.push(token)
        if live.pipeline.finished is not None:
            del self._live[uid]
            if token.engine_finish is None:  # a stop string ended it mid-batch
                removed = self._generator.remove([uid], return_prompt_caches=True)
                for cache, tokens in removed.values():
                    self.prompt_cache.store(tokens, cache)
        for event in events:
            live.sink(event)

    def close(self) -> None:
        """End the batch and drop every reference to the model's arrays."""
        self.abort_all(RuntimeError("model unloaded"))
        self._generator.close()
        del self._generator
        del self.prompt_cache
        del self.loaded
