"""One request's trip through the scheduler, and its answer as JSON or an SSE stream."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from mlxk2.server._requests import check_logit_bias, sampling_params, token_budget
from mlxk2.server._state import ServerState
from mlxk2.server.errors import BadRequestError, ServiceUnavailableError, to_status_and_body
from mlxk2.server.provider import LoadedEntry
from mlxk2.server.scheduler import Aborted, Delta, Event, Finished, GenerationRequest, Mailbox
from mlxk2.server.schemas import SamplingFields

log = logging.getLogger("mlxk2.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _mergeable(first: Delta, second: Delta) -> bool:
    """Two deltas can share a chunk unless that would reorder reasoning and content."""
    return not (first.content and second.reasoning)


class Run:
    """One admitted request: its lease on a model, its slot, and its event queue."""

    def __init__(self, state: ServerState, entry: LoadedEntry, gen: GenerationRequest,
                 arrived: float) -> None:
        self.state = state
        self.entry = entry
        self.mailbox = Mailbox()
        self.events = self.mailbox.queue
        self.started = arrived
        self.first_event: float | None = None
        worker = state.provider.worker
        self.ticket = worker.submit(entry.batch, gen, self.mailbox)
        self.closed = False
        entry.running += 1

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Events in order; text that piled up while the client was slow comes merged."""
        pending: Event | None = None
        while True:
            event = pending or await self.events.get()
            pending = None
            while isinstance(event, Delta) and not self.events.empty():
                following = self.events.get_nowait()
                if isinstance(following, Delta) and _mergeable(event, following):
                    event = Delta(event.content + following.content,
                                  event.reasoning + following.reasoning)
                else:
                    pending = following
                    break
            if self.first_event is None:
                self.first_event = time.perf_counter()
                self.state.metrics.ttft.observe(self.first_event - self.started)
            if isinstance(event, Finished):
                self._record(event)
            yield event
            if not isinstance(event, Delta):
                return

    def _record(self, done: Finished) -> None:
        metrics = self.state.metrics
        metrics.prompt_tokens.inc(done.prompt_tokens)
        metrics.cached_prompt_tokens.inc(done.cached_tokens)
        metrics.generated_tokens.inc(done.completion_tokens)
        if done.decode_seconds > 0 and done.completion_tokens > 1:
            metrics.tokens_per_second.observe((done.completion_tokens - 1) / done.decode_seconds)

    def close(self) -> None:
        """Free the batch slot, the admission slot and the model lease (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.entry.running -= 1
        self.state.provider.worker.cancel(self.ticket)
        self.state.admission.leave()
        self.state.provider.release(self.entry)


async def start_run(state: ServerState, req: SamplingFields,
                    prompt_for: Callable[[LoadedEntry], tuple[list[int], bool | None]]) -> Run:
    """Load the model, build the prompt, wait for a slot and submit the request.

    ``prompt_for`` returns the prompt tokens and where reasoning stands: None to
    leave the text unsplit (raw completions), else whether the prompt already
    opened a reasoning block. Time to first token counts from here, so it
    includes loading and queueing.
    """
    arrived = time.perf_counter()
    if req.n not in (None, 1):
        raise BadRequestError("Only n=1 is supported.", param="n")
    model = req.model or state.config.model
    if not model:
        raise BadRequestError("No model given and the server has no default model.",
                              param="model")
    entry = await state.provider.acquire(model, keep_alive=req.keep_alive)
    try:
        if req.logit_bias:
            check_logit_bias(req, len(entry.loaded.tokenizer))
        prompt, in_reasoning = prompt_for(entry)
        if not prompt:
            raise BadRequestError("The prompt is empty.", param="prompt")
        gen = GenerationRequest(
            prompt_tokens=prompt,
            max_tokens=token_budget(state, entry, len(prompt), req.token_limit()),
            sampling=sampling_params(req),
            stops=req.stop_strings(),
            split_reasoning=in_reasoning is not None,
            start_in_reasoning=bool(in_reasoning),
        )
        await state.admission.enter()
    except BaseException:
        state.provider.release(entry)
        raise
    try:
        if state.draining:
            raise ServiceUnavailableError("The server is shutting down.", code="shutting_down")
        return Run(state, entry, gen, arrived)
    except BaseException:
        state.admission.leave()
        state.provider.release(entry)
        raise


async def _gather(run: Run) -> tuple[str, str, Finished]:
    content: list[str] = []
    reasoning: list[str] = []
    async for event in run:
        if isinstance(event, Delta):
            content.append(event.content)
            reasoning.append(event.reasoning)
        elif isinstance(event, Aborted):
            raise event.error
        else:
            return "".join(content), "".join(reasoning), event
    raise RuntimeError("generation ended without a final event")


class ClientGoneError(Exception):
    """The client of a non-streaming request disconnected before the answer was ready."""


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(run: Run, request: Request) -> tuple[str, str, Finished]:
    """The whole answer, or :class:`ClientGoneError` as soon as the client hangs up.

    The run is closed either way, so a vanished client frees its slot at once.
    """
    answer = asyncio.ensure_future(_gather(run))
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


def usage(done: Finished) -> dict[str, Any]:
    """OpenAI's usage block; ``cached_tokens`` counts prompt tokens reused from the prompt cache."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class EventStream(StreamingResponse):
    """An SSE response that always ends its run, so a disconnect frees the slot.

    Closing the generator runs its cleanup when it has started; a client that
    leaves before the first byte never starts it, so the run is closed here too.
    """

    def __init__(self, run: Run, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
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


async def _stream_events(run: Run, head: Callable[[], dict[str, Any]],
                         piece: Callable[[Delta], dict[str, Any] | None],
                         tail: Callable[[Finished], dict[str, Any]],
                         include_usage: bool) -> AsyncIterator[str]:
    """SSE lines for one run; ``head``/``piece``/``tail`` shape the chunks per endpoint."""
    finished = False
    try:
        first = head()
        if first:
            yield _sse(first)
        async for event in run:
            if isinstance(event, Delta):
                chunk = piece(event)
                if chunk is not None:
                    yield _sse(chunk)
            elif isinstance(event, Finished):
                yield _sse(tail(event))
                if include_usage:
                    yield _sse({**tail(event), "choices": [], "usage": usage(event)})
            else:
                _, body = to_status_and_body(event.error)
                yield _sse(body)
        finished = True
        yield _sse("[DONE]")
    finally:
        if not finished:
            run.state.metrics.disconnects.inc()
            log.info("stream ended early; freeing its batch slot")
        run.close()


def chat_stream(run: Run, ident: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    def piece(event: Delta) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        return chunk(delta) if delta else None

    return _stream_events(
        run,
        head=lambda: chunk({"role": "assistant", "content": ""}),
        piece=piece,
        tail=lambda done: chunk({}, done.finish_reason),
        include_usage=include_usage,
    )


def text_stream(run: Run, ident: str, created: int, model: str,
                 include_usage: bool) -> AsyncIterator[str]:
    base = {"id": ident, "object": "text_completion", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": None,
                                     "finish_reason": finish}], **extra}

    return _stream_events(
        run,
        head=dict,
        piece=lambda event: chunk(event.content) if event.content else None,
        tail=lambda done: chunk("", done.finish_reason),
        include_usage=include_usage,
    )
