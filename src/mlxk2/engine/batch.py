"""The generation core: one model's continuous batch over mlx-lm's ``BatchGenerator``.

``serve`` keeps one :class:`ModelBatch` per loaded model on its MLX thread and
lets requests join and leave it between decode steps; ``run`` drives one the
same way, a request at a time (:func:`mlxk2.engine.generate.generate`). Each
row gets its own :class:`~mlxk2.engine.pipeline.TokenPipeline`, and its events go
to the sink its request was added with. A request's grammar is compiled here,
into a logits processor on its row alone. A request for ``n`` choices prefills
its prompt once: when its first row has sampled its first token, the other rows
join with copies of that row's KV cache, each with its own sampler (seeded
choices use ``seed + choice``) and grammar state. Only one thread may use a batch.

A request's own processing (its sampler, its logits processors, its
detokenizer and stop matcher) can fail without hurting the others: the failing
row gets neutral values for the rest of that step, is removed from the
generator after it, and its sink receives an :class:`Aborted` event with a
:class:`~mlxk2.errors.GenerationFailedError`. The other rows go on decoding
exactly as they would have without it. Only a failure of the model step itself
(shared by every row) escapes :meth:`ModelBatch.step`. Failures are caught where
a row's code is called; an error MLX raises later, while evaluating the whole
step's graph, cannot be pinned on one row and counts as a model failure.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlxk2.engine.events import Aborted, Event
from mlxk2.engine.pipeline import Token, TokenPipeline
from mlxk2.errors import GenerationFailedError

if TYPE_CHECKING:
    from mlxk2.engine.constraints import ConstraintSpec, GrammarProcessor
    from mlxk2.engine.load import LoadedModel
    from mlxk2.engine.sampling import SamplingParams
    from mlxk2.engine.tools import ToolCalling

#: Prompts prefilled per step. Prefill cost grows with prompt tokens whether or not
#: prompts share a step, so taking them one per step lets each request start
#: decoding as soon as its own prompt is done (lower median time to first token);
#: decoding is where batching pays.
PREFILL_BATCH = 1

#: Where one request's events go; called on the batch's thread.
Sink = Callable[[Event], None]
#: mlx-lm's sampler (log-probabilities to token ids) and logits processor
#: (tokens so far and logits to logits); MLX arrays in and out.
Sampler = Callable[[Any], Any]
LogitsProcessor = Callable[[Any, Any], Any]

log = logging.getLogger("mlxk2.engine")

#: What each stage is called in the message a failed request receives.
_STAGE_TEXT = {
    "sampling": "sampling its next token",
    "logits_processor": "processing its logits",
    "detokenizing": "turning its tokens into text",
}


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to run: tokens in, limits and sampling for this request only.

    Plain data only (no compiled objects or callables), so a request can be sent
    to another process as it is. ``split_reasoning`` False leaves ``<think>``
    text in the content (raw completions); ``start_in_reasoning`` says the
    prompt already opened it. ``constraint`` is the grammar the text must match;
    ``tools`` says how to read tool calls from it; ``top_logprobs`` None reports
    no log-probabilities, 0..20 the sampled token's and that many alternatives;
    ``n`` is the number of choices sharing the prompt.
    """

    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams
    stops: tuple[str, ...] = ()
    split_reasoning: bool = True
    start_in_reasoning: bool = False
    constraint: ConstraintSpec | None = None
    tools: ToolCalling | None = None
    top_logprobs: int | None = None
    n: int = 1


@dataclass
class _Live:
    """A running row: its pipeline, where its events go, its request's first row,
    and whether it failed."""

    pipeline: TokenPipeline
    sink: Sink
    group: int = -1
    grammar: GrammarProcessor | None = None
    sampler: Sampler | None = None
    failure: GenerationFailedError | None = None

    def fail(self, stage: str, exc: BaseException) -> None:
        """Mark the row failed (the first failure wins); it leaves after this step."""
        if self.failure is not None:
            return
        log.error("a request failed while %s; it leaves its batch, the others go on",
                  _STAGE_TEXT[stage], exc_info=exc)
        self.failure = GenerationFailedError(
            f"Generation failed while {_STAGE_TEXT[stage]} ({type(exc).__name__}); "
            "other requests were not affected.", stage=stage)
        self.failure.__cause__ = exc


def _guarded_processor(live: _Live, processor: LogitsProcessor) -> LogitsProcessor:
    """``processor`` for ``live``'s row alone: a failure marks the row and leaves its
    logits as they came, so the batch step completes."""

    def guarded(tokens: Any, logits: Any) -> Any:
        if live.failure is not None:
            return logits
        try:
            processed = processor(tokens, logits)
        except Exception as exc:
            live.fail("logits_processor", exc)
            return logits
        if getattr(processed, "shape", None) != logits.shape:
            live.fail("logits_processor", ValueError(
                f"a logits processor returned shape {getattr(processed, 'shape', None)} "
                f"for logits of shape {logits.shape}"))
            return logits
        return processed

    return guarded


class ModelBatch:
    """One model's running batch.

    Args:
        loaded: The model.
        max_batch: Sequences decoded together.
        prompt_cache: Finished requests whose KV caches are kept for reuse (0: none).
        make_sampler: Builds a request's sampler from its settings (default:
            :func:`mlxk2.engine.sampling.make_sampler`); tests pass one that fails.
        make_processors: Builds a request's logits processors from its settings
            (default: :func:`mlxk2.engine.sampling.make_logits_processors`).
    """

    def __init__(self, loaded: LoadedModel, max_batch: int, prompt_cache: int, *,
                 make_sampler: Callable[[SamplingParams], Sampler] | None = None,
                 make_processors: Callable[[SamplingParams], Sequence[LogitsProcessor]]
                 | None = None) -> None:
        from mlx_lm.generate import BatchGenerator

        from mlxk2.engine import sampling
        from mlxk2.engine.prompt_cache import PromptCache

        self._make_sampler = make_sampler or sampling.make_sampler
        self._make_processors = make_processors or sampling.make_logits_processors
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
        #: Rows of each request by its first row's id, and requests still to fork.
        self._groups: dict[int, list[int]] = {}
        self._forks: dict[int, GenerationRequest] = {}
        #: Time spent computing and applying grammar masks, and the steps it covers.
        self.mask_s = 0.0
        self.mask_steps = 0

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def add(self, request: GenerationRequest, sink: Sink) -> int:
        """Queue a request into the running batch; it joins at the next step.

        Returns:
            The request's id in this batch, for :meth:`cancel`.

        Raises:
            ConstraintError: the request's grammar does not compile.
        """
        cache, cached = self.prompt_cache.lookup(request.prompt_tokens)
        uid = self._insert(request, sink, 0, cache, cached, group=None)
        if request.n > 1:
            self._forks[uid] = request
        return uid

    def _insert(self, request: GenerationRequest, sink: Sink, choice: int,
                cache: list[Any] | None, cached: int, group: int | None) -> int:
        sampling = request.sampling
        if choice and sampling.seed is not None:
            sampling = dataclasses.replace(sampling, seed=(sampling.seed + choice) % 2**64)
        live = _Live(TokenPipeline(self.loaded, request, cached, choice), sink)
        processors = list(self._make_processors(sampling))
        if request.constraint is not None:
            from mlxk2.engine.constraints import compiler_for

            live.grammar = compiler_for(self.loaded).processor(request.constraint)
            processors.append(live.grammar)
        live.sampler = self._sampler_for(sampling)
        prompt = request.prompt_tokens
        (uid,) = self._generator.insert(
            [prompt[cached:]],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            max_tokens=[request.max_tokens],
            samplers=[live.sampler],
            logits_processors=[[_guarded_processor(live, p) for p in processors]],
        )
        uid = int(uid)
        live.group = uid if group is None else group
        self._groups.setdefault(live.group, []).append(uid)
        self._live[uid] = live
        return uid

    def _fork(self, uid: int, response: Any) -> None:
        """Add a request's other choices, reusing its first row's prefilled prompt."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        request = self._forks.pop(uid)
        live = self._live[uid]
        if response.finish_reason is not None:
            base, held = response.prompt_cache, response.all_tokens
        else:
            base, held = self._generator.extract_cache([uid])[uid]
        reuse = len(request.prompt_tokens) - 1
        for choice in range(1, request.n):
            cache: list[Any] = copy.deepcopy(base)
            if can_trim_prompt_cache(cache) and len(held) >= reuse:
                trim_prompt_cache(cache, len(held) - reuse)
                self._insert(request, live.sink, choice, cache, reuse, group=uid)
            else:  # a cache that cannot be cut back: this choice prefills on its own
                self._insert(request, live.sink, choice, None, 0, group=uid)

    def _sampler_for(self, p: SamplingParams) -> Sampler:
        if p.seed is not None and p.temperature > 0:
            return self._guarded(self._make_sampler(p))  # own random stream: never shared
        if not self._live:
            self._samplers.clear()  # only running requests' samplers are worth keeping
        key = (p.temperature, p.top_p, p.min_p, p.top_k,
               tuple(sorted((p.logit_bias or {}).items())))
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = self._guarded(self._make_sampler(p))
        return sampler

    def _guarded(self, sampler: Sampler) -> Sampler:
        """``sampler`` that fails only the rows using it, drawing greedily instead.

        A shared sampler still samples all its rows in one call; when that call
        fails, every row with those settings fails with it, since they would
        all have hit the same error.
        """

        def guarded(logprobs: Any) -> Any:
            try:
                return sampler(logprobs)
            except Exception as exc:
                import mlx.core as mx

                for live in self._live.values():
                    if live.sampler is guarded:
                        live.fail("sampling", exc)
                return mx.argmax(logprobs, axis=-1)

        return guarded

    def cancel(self, uid: int) -> None:
        """Drop a request (every choice), e.g. after a disconnect; slots free at the next step."""
        self._forks.pop(uid, None)
        for row in list(self._groups.get(uid, [uid])):
            if row in self._live:
                self._forget(row)
                self._generator.remove([row])

    def _forget(self, uid: int) -> None:
        live = self._live.pop(uid)
        if live.grammar is not None:
            self.mask_s += live.grammar.mask_s
            self.mask_steps += live.grammar.steps
        rows = self._groups.get(live.group, [])
        if uid in rows:
            rows.remove(uid)
        if not rows and live.group not in self._forks:
            self._groups.pop(live.group, None)

    def abort_all(self, error: BaseException) -> None:
        """End every running request with an :class:`Aborted` event carrying ``error``."""
        for uid, live in list(self._live.items()):
            self._generator.remove([uid])
            live.sink(Aborted(error))
        self._live.clear()
        self._groups.clear()
        self._forks.clear()

    def step(self) -> None:
        """Run one prefill/decode step and hand each request the events it decides.

        Rows that failed in this step leave the batch with an :class:`Aborted` event.
        A new request's first token comes out of its third step (for a prompt of up
        to 2048 tokens): mlx-lm's generator prefills the prompt but its last token,
        then runs that token (sampling the first token), then returns the first token
        having started on the second, as ``stream_generate`` does before its first.

        Raises:
            Exception: the model step failed; the batch's requests are still running
                and the caller should end them (:meth:`abort_all`).
        """
        _, responses = self._generator.next()
        for response in responses:
            live = self._live.get(response.uid)
            if live is None or live.failure is not None:
                continue
            if response.uid in self._forks:
                self._fork(response.uid, response)
            if response.finish_reason is not None:
                self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            token = Token(response.token, response.finish_reason, response.logprobs)
            self._deliver(response.uid, live, token)
        self._drop_failed()

    def _drop_failed(self) -> None:
        """End each failed row's request, every choice of it, with its failure."""
        for uid, live in list(self._live.items()):
            if live.failure is not None and uid in self._live:
                self.cancel(live.group)
                live.sink(Aborted(live.failure))

    def _deliver(self, uid: int, live: _Live, token: Token) -> None:
        try:
            events = live.pipeline.push(token)
        except Exception as exc:  # this request's detokenizer or stop matcher
            live.fail("detokenizing", exc)
            return
        if live.pipeline.finished is not None:
            self._forget(uid)
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
