"""One request's trip through the worker, and the one flow every generating endpoint shares.

:func:`respond` is that flow: start a :class:`Run`, then stream its events or
collect them, and answer. An endpoint supplies only what differs: the request
body, a :data:`PromptBuilder` and a :class:`Wire` that renders the core's events
in its own format.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from mlxk2 import __version__
from mlxk2.engine.batch import GenerationRequest
from mlxk2.engine.events import Aborted, Delta, Event, Finished, Reply, acollect_choices
from mlxk2.server._requests import check_logit_bias, sampling_params, token_budget
from mlxk2.server._state import ServerState, state_of
from mlxk2.server.errors import BadRequestError, ServiceUnavailableError
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.schemas import SamplingFields
from mlxk2.server.worker import Mailbox

if TYPE_CHECKING:
    from mlxk2.engine.constraints import ConstraintSpec
    from mlxk2.engine.tools import ToolCalling

log = logging.getLogger("mlxk2.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Set when ``max_tokens`` was cut to what the context leaves: ``<requested>-><used>``.
CLAMP_HEADER = "X-Mlxk2-Max-Tokens-Clamped"


def _mergeable(first: Delta, second: Delta) -> bool:
    """Two deltas can share a chunk unless that would reorder reasoning and content."""
    return first.choice == second.choice and not (first.content and second.reasoning)


def system_fingerprint(entry: LoadedEntry) -> str:
    """The model's identity (name and snapshot folder) with the mlxk2 version."""
    identity = f"{entry.name}\0{entry.loaded.path}".encode()
    return f"mlxk2-{__version__}-{hashlib.sha256(identity).hexdigest()[:12]}"


class Run:
    """One admitted request: its lease on a model, its slots, and its event queue."""

    def __init__(self, state: ServerState, entry: LoadedEntry, gen: GenerationRequest,
                 arrived: float, clamped: tuple[int, int] | None = None) -> None:
        self.state = state
        self.entry = entry
        self.choices = gen.n
        self.clamped = clamped
        self.fingerprint = system_fingerprint(entry)
        self.mailbox = Mailbox()
        self.events = self.mailbox.queue
        self.started = arrived
        self.first_event: float | None = None
        worker = state.provider.worker
        self.ticket = worker.submit(entry.batch, gen, self.mailbox)
        self.closed = False
        entry.running += 1

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Events in order until every choice has finished; text that piled up while
        the client was slow comes merged."""
        pending: Event | None = None
        unfinished = self.choices
        while True:
            event = pending or await self.events.get()
            pending = None
            while isinstance(event, Delta) and not self.events.empty():
                following = self.events.get_nowait()
                if isinstance(following, Delta) and _mergeable(event, following):
                    event = Delta(event.content + following.content,
                                  event.reasoning + following.reasoning,
                                  event.logprobs + following.logprobs, event.choice)
                else:
                    pending = following
                    break
            if self.first_event is None:
                self.first_event = time.perf_counter()
                self.state.metrics.ttft.observe(self.first_event - self.started)
            if isinstance(event, Finished):
                self._record(event)
                unfinished -= 1
            yield event
            if unfinished == 0 or isinstance(event, Aborted):
                return

    def _record(self, done: Finished) -> None:
        metrics = self.state.metrics
        metrics.prompt_tokens.inc(done.prompt_tokens)
        metrics.cached_prompt_tokens.inc(done.cached_tokens)
        metrics.generated_tokens.inc(done.completion_tokens)
        if done.tokens_per_s > 0:
            metrics.tokens_per_second.observe(done.tokens_per_s)

    def close(self) -> None:
        """Free the batch slot, the admission slot and the model lease (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.entry.running -= 1
        self.state.provider.worker.cancel(self.ticket)
        self.state.admission.leave()
        self.state.provider.release(self.entry)


@dataclass(frozen=True)
class Prompt:
    """A request's prompt for the loaded model, and what the core must do with the reply.

    ``in_reasoning`` None leaves the text unsplit (raw completions, grammars);
    otherwise it says whether the prompt already opened a reasoning block.
    ``constraint`` is the grammar the reply must match and ``tools`` how to
    read tool calls from it.
    """

    tokens: list[int]
    in_reasoning: bool | None
    constraint: ConstraintSpec | None = None
    tools: ToolCalling | None = None


#: Builds a request's :class:`Prompt` once its model is loaded.
PromptBuilder = Callable[[LoadedEntry], Prompt]


async def start_run(state: ServerState, req: SamplingFields, prompt_for: PromptBuilder) -> Run:
    """Load the model, build the prompt, wait for slots and submit the request.

    Time to first token counts from here, so it includes loading and queueing.
    """
    arrived = time.perf_counter()
    if req.choices() > state.config.max_n:
        raise BadRequestError(f"n may be at most {state.config.max_n} on this server.",
                              param="n")
    model = req.model or state.config.model
    if not model:
        raise BadRequestError("No model given and the server has no default model.",
                              param="model")
    entry = await state.provider.acquire(model, keep_alive=req.keep_alive)
    try:
        if req.logit_bias:
            check_logit_bias(req, len(entry.loaded.tokenizer))
        prompt = prompt_for(entry)
        if not prompt.tokens:
            raise BadRequestError("The prompt is empty.", param="prompt")
        budget = token_budget(state, entry, len(prompt.tokens), req.token_limit())
        gen = GenerationRequest(
            prompt_tokens=prompt.tokens,
            max_tokens=budget.max_tokens,
            sampling=sampling_params(req),
            stops=req.stop_strings(),
            split_reasoning=prompt.in_reasoning is not None,
            start_in_reasoning=bool(prompt.in_reasoning),
            constraint=prompt.constraint,
            tools=prompt.tools,
            top_logprobs=req.top_logprobs_wanted(),
            n=req.choices(),
        )
        clamped = (budget.requested, budget.max_tokens) \
            if budget.clamped and budget.requested is not None else None
        await state.admission.enter()
    except BaseException:
        state.provider.release(entry)
        raise
    try:
        if state.draining:
            raise ServiceUnavailableError("The server is shutting down.", code="shutting_down")
        return Run(state, entry, gen, arrived, clamped)
    except BaseException:
        state.admission.leave()
        state.provider.release(entry)
        raise


class ClientGoneError(Exception):
    """The client of a non-streaming request disconnected before the answer was ready."""


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(run: Run, request: Request) -> list[Reply]:
    """Every choice's whole answer, or :class:`ClientGoneError` as soon as the client hangs up.

    The run is closed either way, so a vanished client frees its slots at once.
    """
    answer = asyncio.ensure_future(acollect_choices(run, run.choices))
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not answer.done():
            answer.cancel()
        run.close()
    if answer.done() and not answer.cancelled():
        return answer.result()
    run.state.metrics.disconnects.inc()
    log.info("client disconnected before its answer; freed its batch slot")
    raise ClientGoneError


class EventStream(StreamingResponse):
    """An SSE response that always ends its run, so a disconnect frees the slot.

    Closing the generator runs its cleanup when it has started; a client that
    leaves before the first byte never starts it, so the run is closed here too.
    """

    def __init__(self, run: Run, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={**SSE_HEADERS, **run_headers(run)})
        self.run = run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            log.info("client disconnected mid-stream")
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            if not self.run.closed:
                self.run.state.metrics.disconnects.inc()
                self.run.close()


def run_headers(run: Run) -> dict[str, str]:
    """Response headers every generating endpoint sends (the clamp marker, when it applies)."""
    if run.clamped is None:
        return {}
    return {CLAMP_HEADER: f"{run.clamped[0]}->{run.clamped[1]}"}


class Wire(Protocol):
    """How one endpoint renders a run: SSE text while streaming, or one JSON body."""

    def stream(self, run: Run) -> AsyncIterator[str]:
        """The SSE text for ``run``'s events; it must close the run when it ends."""
        ...

    def body(self, replies: list[Reply]) -> dict[str, Any]:
        """The whole answer (one reply per choice) as the endpoint's JSON body."""
        ...


async def respond(request: Request, req: SamplingFields, prompt_for: PromptBuilder,
                  wire_for: Callable[[Run], Wire]) -> Response:
    """Start a run, stream or collect its events, and answer: every generating endpoint.

    Args:
        request: The HTTP request (watched for a disconnect while collecting).
        req: The validated body.
        prompt_for: Builds the prompt once the model is loaded.
        wire_for: The endpoint's renderer for the run (its model name and fingerprint).
    """
    run = await start_run(state_of(request), req, prompt_for)
    wire = wire_for(run)
    if req.stream:
        return EventStream(run, wire.stream(run))
    return JSONResponse(wire.body(await collect(run, request)), headers=run_headers(run))
