"""Request bodies for the OpenAI endpoints, validated strictly.

Unknown fields are ignored so that any OpenAI-compatible client works; a known
field with the wrong type is a 400. ``strict`` stops pydantic from turning
``"0.7"`` into a float or ``1`` into ``True``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(strict=True, extra="ignore")

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopField = str | Annotated[list[str], Field(max_length=16)] | None


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
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None

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


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` is the newer name; either one caps the output."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int]
    echo: Literal[False] = False
