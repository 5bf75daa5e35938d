"""Request bodies for the OpenAI endpoints, validated strictly.

Unknown fields are ignored so that any OpenAI-compatible client works; a known
field with the wrong type is a 400. ``strict`` stops pydantic from turning
``"0.7"`` into a float or ``1`` into ``True``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from mlxk2.server.config import keep_alive_seconds

_STRICT = ConfigDict(strict=True, extra="ignore")

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopField = str | Annotated[list[str], Field(max_length=16)] | None
#: ``"5m"``, seconds, or negative for never, parsed to seconds (``math.inf``: never).
KeepAlive = Annotated[float, BeforeValidator(keep_alive_seconds)]


class TextPart(BaseModel):
    """One element of a list-valued ``content``; only text parts are accepted."""

    model_config = _STRICT
    type: str
    text: str | None = None


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Role
    content: str | list[TextPart] | None = None
    #: An assistant turn's calls, OpenAI-shaped (checked when the prompt is built).
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        """The message text, with text parts joined; other part types are a 400 upstream."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    def non_text_part(self) -> str | None:
        """The first content part type that is not plain text, if any."""
        if isinstance(self.content, list):
            for part in self.content:
                if part.type != "text" or part.text is None:
                    return part.type
        return None


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = _STRICT
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    seed: Annotated[int, Field(ge=0, le=2**64 - 1)] | None = None  # mx.random.seed's range
    stop: StopField = None
    # OpenAI treats null as "the default"; some front ends send n/stream as null.
    n: Annotated[int, Field(ge=1)] | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    #: ``{"type": "text" | "json_object" | "json_schema", ...}``, translated in
    #: :mod:`mlxk2.server.endpoints._openai` so each problem names its field.
    response_format: dict[str, Any] | None = None

    def choices(self) -> int:
        return self.n or 1

    def top_logprobs_wanted(self) -> int | None:
        """Alternatives per token to report; None: no log-probabilities at all."""
        return None

    # An extension, as in Ollama: how long the model stays loaded after this request.
    keep_alive: KeepAlive | None = None

    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple without empty strings (an empty stop would end at once)."""
        if self.stop is None:
            return ()
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in items if s)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def token_limit(self) -> int | None:
        """The most tokens the client allows in the answer; None leaves it to the server."""
        return self.max_tokens


TopLogprobs = Annotated[int, Field(ge=0, le=20)]


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` is the newer name; either one caps the output."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int]
    echo: bool | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    #: The legacy form: how many alternatives per token (0: the sampled token's only).
    logprobs: TopLogprobs | None = None

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


class ResponsesRequest(SamplingFields):
    """``POST /v1/responses``; items and tools are translated in its endpoint module."""

    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    # Fields that would change the output and are not implemented (a 400 each).
    background: bool | None = None
    truncation: str | None = None
    conversation: Any = None
    prompt: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    top_logprobs: int | None = None

    def token_limit(self) -> int | None:
        return self.max_output_tokens or self.max_tokens


class MessagesRequest(SamplingFields):
    """``POST /v1/messages`` (Anthropic); blocks and tools are translated in its endpoint module."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=16)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    service_tier: str | None = None
    # Fields that would change the output and are not implemented (a 400 each).
    mcp_servers: list[dict[str, Any]] | None = None
    container: Any = None

    def stop_strings(self) -> tuple[str, ...]:
        return (*super().stop_strings(), *(s for s in (self.stop_sequences or []) if s))


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model_config = _STRICT
    model: str
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
