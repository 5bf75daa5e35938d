"""Constrained decoding: a grammar decides which tokens a request may sample next.

A request carries a :class:`ConstraintSpec`, plain data that says what its text
must match (a JSON schema, any JSON object, or a Lark grammar). The batch compiles
it with llguidance into a matcher and adds a :class:`GrammarProcessor` to that
request's row only: rows without a constraint pay nothing. Each decode step the
processor advances the matcher by the token the row sampled last, then keeps only
the tokens the grammar allows; once the grammar is complete, only a stop token is
left, so a finished document ends the request.

Grammars must terminate, so JSON is written without free whitespace
(llguidance's ``whitespace_flexible`` off: compact ``{"a":1}`` separators, no
indentation a weak model could extend up to ``max_tokens``), and an object schema
that does not say whether it allows other properties allows none (the output
still validates against the schema; it only leaves out keys nobody asked for).
llguidance is imported only when a request asks for a constraint.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlxk2.errors import ValidationError

if TYPE_CHECKING:
    from mlxk2.engine.load import LoadedModel

ConstraintKind = Literal["json_schema", "json_object", "lark"]

#: llguidance's JSON options (its ``JsonCompileOptions``): no free whitespace, so
#: every document has an end.
JSON_OPTIONS: Any = {"whitespace_flexible": False}
#: Compiled grammars kept per model.
GRAMMAR_CACHE_SIZE = 64


@dataclass(frozen=True)
class ConstraintSpec:
    """What a request's text must match, as plain data (it crosses process boundaries).

    ``kind`` ``"json_schema"`` holds the schema as JSON text, ``"lark"`` a
    grammar in llguidance's Lark dialect (which may embed ``%json{...}``
    schemas); ``"json_object"`` needs no text.
    """

    kind: ConstraintKind
    text: str = ""

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> ConstraintSpec:
        return cls("json_schema", json.dumps(schema))


JSON_OBJECT = ConstraintSpec("json_object")


class ConstraintError(ValidationError):
    """A constraint the grammar library cannot compile (a bad schema or grammar)."""


def _closed_objects(node: Any) -> Any:
    """``node`` with ``additionalProperties: false`` on objects that do not say otherwise."""
    if isinstance(node, list):
        return [_closed_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed_objects(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out \
            and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


def _grammar_text(spec: ConstraintSpec) -> str:
    """The llguidance grammar for ``spec``.

    Raises:
        ConstraintError: the schema is not a JSON object.
    """
    from llguidance import LLMatcher

    if spec.kind == "lark":
        return LLMatcher.grammar_from_lark(spec.text)
    if spec.kind == "json_object":
        schema: Any = {"type": "object"}
    else:
        try:
            schema = json.loads(spec.text)
        except json.JSONDecodeError as exc:
            raise ConstraintError(f"The JSON schema is not valid JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise ConstraintError("The JSON schema must be a JSON object")
    try:
        return LLMatcher.grammar_from_json_schema(json.dumps(_closed_objects(schema)),
                                                  defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise ConstraintError(f"The JSON schema cannot be compiled: {exc}") from exc


class GrammarCompiler:
    """One model's llguidance tokenizer and its most recently used compiled grammars.

    The tokenizer also gives each token's exact bytes, for log-probability reports.

    Thread-safe: the server checks specs on its event loop while the MLX thread
    builds matchers from the same cache.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        import llguidance.hf

        self.vocab_size = _logits_width(loaded)
        self.stop_ids = tuple(sorted(loaded.stop_token_ids))
        self._tokenizer = llguidance.hf.from_tokenizer(
            loaded.tokenizer._tokenizer, n_vocab=self.vocab_size, eos_token=list(self.stop_ids)
        )
        self._lock = threading.Lock()
        self._compiled: OrderedDict[ConstraintSpec, Any] = OrderedDict()

    def _template(self, spec: ConstraintSpec) -> Any:
        """A fresh matcher for ``spec``, compiled once and kept for later requests."""
        from llguidance import LLMatcher

        with self._lock:
            matcher = self._compiled.get(spec)
            if matcher is not None:
                self._compiled.move_to_end(spec)
                return matcher
        grammar = _grammar_text(spec)
        matcher = LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            what = "grammar" if spec.kind == "lark" else "JSON schema"
            raise ConstraintError(f"The {what} cannot be compiled: {matcher.get_error()}")
        with self._lock:
            self._compiled[spec] = matcher
            while len(self._compiled) > GRAMMAR_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return matcher

    def check(self, spec: ConstraintSpec) -> None:
        """Compile ``spec`` now, so a bad one is refused before the request is queued.

        Raises:
            ConstraintError: llguidance cannot compile it.
        """
        self._template(spec)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes of one token (part of a UTF-8 character, for some)."""
        return bytes(self._tokenizer.decode_bytes([token_id]))

    def processor(self, spec: ConstraintSpec) -> GrammarProcessor:
        """A new row's logits processor, with its own matcher state.

        Raises:
            ConstraintError: llguidance cannot compile ``spec``.
        """
        return GrammarProcessor(self._template(spec).deep_copy(), self.vocab_size,
                                self.stop_ids)


def _logits_width(loaded: LoadedModel) -> int:
    """The model's output width, which can exceed the tokenizer's vocabulary (padding)."""
    config = loaded.config.get("text_config") or loaded.config
    width = config.get("vocab_size") or loaded.config.get("vocab_size")
    return max(int(width or 0), len(loaded.tokenizer))


_COMPILERS: weakref.WeakKeyDictionary[Any, GrammarCompiler] = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


def compiler_for(loaded: LoadedModel) -> GrammarCompiler:
    """The model's :class:`GrammarCompiler`, made on first use and dropped with the model."""
    with _COMPILERS_LOCK:
        compiler = _COMPILERS.get(loaded.tokenizer)
        if compiler is None:
            compiler = _COMPILERS[loaded.tokenizer] = GrammarCompiler(loaded)
        return compiler


class GrammarProcessor:
    """mlx-lm logits processor for one row: only grammar-allowed tokens keep their logit.

    mlx-lm calls it once per step with the row's tokens so far, the last one being
    what the row sampled in the previous step (on the first call, the last prompt
    token, which the grammar never sees). ``mask_s`` adds up the time spent
    computing and applying masks, for the benchmark.
    """

    def __init__(self, matcher: Any, vocab_size: int, stop_ids: tuple[int, ...]) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._stop_ids = stop_ids
        self._started = False
        self.mask_s = 0.0
        self.steps = 0

    @property
    def complete(self) -> bool:
        """Whether the text so far is a whole document of the grammar."""
        return bool(self._matcher.is_accepting())

    def __call__(self, context: Any, logits: Any) -> Any:
        import mlx.core as mx
        import numpy as np

        started = time.perf_counter()
        if self._started:
            self._matcher.consume_token(int(context[-1].item()))
        self._started = True
        if self._matcher.is_stopped() or self._matcher.is_error():
            allowed = np.zeros(self._vocab_size, dtype=bool)
            allowed[list(self._stop_ids)] = True
        else:
            words = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
            allowed = np.unpackbits(words, bitorder="little")[: self._vocab_size].astype(bool)
        width = logits.shape[-1]
        if width < allowed.shape[0]:
            allowed = allowed[:width]
        elif width > allowed.shape[0]:
            allowed = np.concatenate([allowed, np.zeros(width - allowed.shape[0], dtype=bool)])
        masked = mx.where(mx.array(allowed), logits, mx.array(-float("inf"), logits.dtype))
        self.mask_s += time.perf_counter() - started
        self.steps += 1
        return masked
