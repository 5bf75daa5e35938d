"""Human text and JSON lines for ``embed``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlxk2.ops.embed import EmbeddingRecord

TEXT_WIDTH = 40
SHOWN_VALUES = 4


def record_line(record: EmbeddingRecord) -> str:
    """The text (shortened), the first few values and the vector's norm."""
    text = " ".join(record.text.split())
    if len(text) > TEXT_WIDTH:
        text = text[: TEXT_WIDTH - 1] + "…"
    values = ", ".join(f"{x:+.4f}" for x in record.embedding[:SHOWN_VALUES])
    more = ", …" if len(record.embedding) > SHOWN_VALUES else ""
    return (f"{text:<{TEXT_WIDTH}}  [{values}{more}]  dim={len(record.embedding)}  "
            f"norm={record.norm:.4f}")


def jsonl_line(record: EmbeddingRecord, model: str) -> str:
    return json.dumps(record.to_dict(model), ensure_ascii=False)


def truncation_note(count: int, max_tokens: int) -> str | None:
    if not count:
        return None
    texts = "text was" if count == 1 else "texts were"
    return f"Note: {count} {texts} longer than {max_tokens} tokens and cut to that length"
