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
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlxk2.engine.events import Aborted, Event
from mlxk2.engine.pipeline import Token, TokenPipeline

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
    """A running row: its pipeline, where its events go, its request's first row."""

    pipeline: TokenPipeline
    sink: Sink
    group: int
    grammar: GrammarProcessor | None = None


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
        from mlxk2.engine.sampling import make_logits_processors

        sampling = request.sampling
        if choice and sampling.seed is not None:
            sampling = dataclasses.replace(sampling, seed=(sampling.seed + choice) % 2**64)
        processors = make_logits_processors(sampling)
        grammar = None
        if request.constraint is not None:
            from mlxk2.engine.constraints import compiler_for

            grammar = compiler_for(self.loaded).processor(request.constraint)
            processors = [*processors, grammar]
        pipeline = TokenPipeline(self.loaded, request, cached, choice)
        prompt = request.prompt_tokens
        (uid,) = self._generator.insert(
            [prompt[cached:]],
            caches=[cache],
            all_tokens=[prompt[:cached]],
            max_tokens=[request.max_tokens],
            samplers=[self._sampler_for(sampling)],
            logits_processors=[processors],
        )
        uid = int(uid)
        first = uid if group is None else group
        self._groups.setdefault(first, []).append(uid)
        self._live[uid] = _Live(pipeline, sink, first, grammar)
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
        """Run one prefill/decode step and hand each request the events it decides."""
        _, responses = self._generator.next()
        for response in responses:
            live = self._live.get(response.uid)
            if live is None:
                continue
            if response.uid in self._forks:
                self._fork(response.uid, response)
            if response.finish_reason is not None:
                self.prompt_cache.store(response.all_tokens, response.prompt_cache)
            token = Token(response.token, response.finish_reason, response.logprobs)
            self._deliver(response.uid, live, token)

    def _deliver(self, uid: int, live: _Live, token: Token) -> None:
        events = live.pipeline.push(token)
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
