"""Rebuild a Hugging Face ``tokenizer.json`` from a GGUF vocabulary.

A GGUF carries its tokenizer as metadata: ``tokenizer.ggml.model`` says which
algorithm (``gpt2``: byte-level BPE with merges; ``llama``: SentencePiece-style
BPE with scores and byte fallback), ``tokenizer.ggml.pre`` names the text
splitting the merges were learned with, and ``token_type`` marks the control
(special) and user-defined tokens that must be matched whole. The ``tokenizers``
library rebuilds the same tokenizer from those parts, with every id unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk2.errors import ModelIncompatibleError

CONTROL, USER_DEFINED = 3, 4
_SPACE = "\u2581"  # SentencePiece's visible space

# The splitting regexes llama.cpp applies before byte-level BPE, per ``tokenizer.ggml.pre``.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_PRE = ("default", "gpt-2", "gpt2")
_DIGITS_THEN_GPT2_PRE = ("smollm", "starcoder", "refact")
_REGEX_PRE = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
#: llama.cpp matches whole vocabulary words before merging for these (as HF's ``ignore_merges``).
_IGNORE_MERGES_PRE = frozenset({"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx"})


@dataclass(frozen=True)
class TokenizerFacts:
    """What the model config needs from the tokenizer."""

    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    chat_template: str | None


def check_tokenizer(metadata: dict[str, Any]) -> None:
    """Refuse, by name, a vocabulary this module cannot rebuild.

    Raises:
        ModelIncompatibleError: No vocabulary, or an unknown tokenizer model or pre-tokenizer.
    """
    if not metadata.get("tokenizer.ggml.tokens"):
        raise ModelIncompatibleError("The GGUF file has no tokenizer vocabulary")
    kind = metadata.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise ModelIncompatibleError(
            f"GGUF tokenizer model '{kind}' cannot be imported; supported: gpt2, llama"
        )
    pre = metadata.get("tokenizer.ggml.pre", "default")
    known = {*_GPT2_PRE, *_DIGITS_THEN_GPT2_PRE, *_REGEX_PRE}
    if kind == "gpt2" and pre not in known:
        raise ModelIncompatibleError(
            f"GGUF pre-tokenizer '{pre}' cannot be imported; supported: {', '.join(sorted(known))}"
        )


def write_tokenizer(metadata: dict[str, Any], dest: Path, *, context_length: int) -> TokenizerFacts:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    Raises:
        ModelIncompatibleError: No vocabulary, or a tokenizer model or
            pre-tokenizer this importer does not know (named).
    """
    check_tokenizer(metadata)
    tokens = metadata["tokenizer.ggml.tokens"]
    kind = metadata.get("tokenizer.ggml.model")
    types = list(metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(metadata, tokens)
        add_bos_default = False
    else:
        tokenizer = _sentencepiece_bpe(metadata, tokens, types)
        add_bos_default = True
    _add_whole_tokens(tokenizer, tokens, types)

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    bos, eos = token("bos_token_id"), token("eos_token_id")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    _set_post_processor(tokenizer, metadata, tokens, add_bos and bos is not None,
                        add_eos and eos is not None)
    tokenizer.save(str(dest / "tokenizer.json"))

    template = metadata.get("tokenizer.chat_template")
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": token("unknown_token_id"),
                "pad_token": token("padding_token_id")}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(index): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": kind_ == CONTROL}
            for index, (text, kind_) in enumerate(zip(tokens, types, strict=False))
            if kind_ in (CONTROL, USER_DEFINED)
        },
    }
    if template:
        config["chat_template"] = template
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    present = {k: v for k, v in specials.items() if v is not None}
    (dest / "special_tokens_map.json").write_text(json.dumps(present, indent=2) + "\n")

    eos_ids = [metadata.get(f"tokenizer.ggml.{key}") for key in
               ("eos_token_id", "eot_token_id", "eom_token_id")]
    return TokenizerFacts(
        vocab_size=len(tokens),
        bos_token_id=metadata.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=tuple(dict.fromkeys(i for i in eos_ids if isinstance(i, int))),
        pad_token_id=metadata.get("tokenizer.ggml.padding_token_id"),
        chat_template=template,
    )


def _byte_level_bpe(metadata: dict[str, Any], tokens: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = metadata.get("tokenizer.ggml.pre", "default")
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges") or []]
    model = models.BPE(
        vocab={text: index for index, text in enumerate(tokens)},
        merges=merges,
        ignore_merges=pre in _IGNORE_MERGES_PRE,
    )
    tokenizer = Tokenizer(model)
    if pre in _GPT2_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif pre in _DIGITS_THEN_GPT2_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
    else:  # check_tokenizer let only the known splits through
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_REGEX_PRE[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(metadata: dict[str, Any], tokens: list[str], types: list[int]) -> Any:
    """SentencePiece BPE: merges ranked by the score of the token they make, as
    llama.cpp's tokenizer picks the best-scoring pair; unknown bytes fall back
    to the ``<0xNN>`` tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = list(metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
    vocab = {text: index for index, text in enumerate(tokens)}
    merges = []
    for index, text in enumerate(tokens):
        if types[index] != 1 or len(text) < 2:
            continue
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in vocab and right in vocab:
                merges.append((-scores[index], vocab[left], vocab[right], left, right))
    merges.sort()
    unk = metadata.get("tokenizer.ggml.unknown_token_id")
    model = models.BPE(
        vocab=vocab,
        merges=[(left, right) for *_, left, right in merges],
        unk_token=tokens[unk] if isinstance(unk, int) else None,
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(model)
    prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    replace = normalizers.Replace(" ", _SPACE)
    tokenizer.normalizer = (
        normalizers.Sequence([normalizers.Prepend(_SPACE), replace]) if prefix else replace
    )
    steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _add_whole_tokens(tokenizer: Any, tokens: list[str], types: list[int]) -> None:
    """Control tokens become special tokens, user-defined ones plain added tokens;
    both keep their vocabulary ids and are never split."""
    from tokenizers import AddedToken

    special = [AddedToken(t, normalized=False, special=True)
               for t, k in zip(tokens, types, strict=False) if k == CONTROL]
    plain = [AddedToken(t, normalized=False, special=False)
             for t, k in zip(tokens, types, strict=False) if k == USER_DEFINED]
    if special:
        tokenizer.add_special_tokens(special)
    if plain:
        tokenizer.add_tokens(plain)


def _set_post_processor(tokenizer: Any, metadata: dict[str, Any], tokens: list[str],
                        add_bos: bool, add_eos: bool) -> None:
    from tokenizers import processors

    if not (add_bos or add_eos):
        if metadata.get("tokenizer.ggml.model") == "gpt2":
            tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        return
    bos_id = metadata["tokenizer.ggml.bos_token_id"] if add_bos else None
    eos_id = metadata["tokenizer.ggml.eos_token_id"] if add_eos else None
    first = [tokens[bos_id]] if bos_id is not None else []
    last = [tokens[eos_id]] if eos_id is not None else []
    single = " ".join([*first, "$A", *last])
    pair = " ".join([*first, "$A", *last, *first, "$B", *last])
    specials = [(tokens[i], i) for i in dict.fromkeys(x for x in (bos_id, eos_id) if x is not None)]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=specials
    )
