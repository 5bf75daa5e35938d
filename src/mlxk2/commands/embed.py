"""Turn texts into embedding vectors with a local embedding model.

  mlxk2 embed MODEL "some text" "more text"    one line per text: values and norm
  mlxk2 embed MODEL --file notes.txt           one text per line of the file
  cat notes.txt | mlxk2 embed MODEL -          '-' reads stdin, one text per line
  mlxk2 embed MODEL --file big.txt --format jsonl > vectors.jsonl

Blank lines in a file or stdin are skipped. Texts longer than the model's limit
are cut to it, and a note says how many were.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from mlxk2.commands._common import add_model_argument
from mlxk2.errors import FilesystemError, ValidationError
from mlxk2.output.sink import Output

STDIN_ARG = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="Texts to embed; '-' reads stdin, one text per line")
    parser.add_argument("--file", default=None, metavar="F",
                        help="Read texts from this file, one per line ('-' is stdin)")
    parser.add_argument("--batch", type=int, default=32, metavar="N",
                        help="Texts per forward pass (default: 32)")
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                        help="L2-normalise the vectors (default: as the model's pipeline says)")
    parser.add_argument("--dimensions", type=int, default=None, metavar="D",
                        help="Keep the first D values (renormalised when normalising)")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text",
                        help="text: one line per text (default); jsonl: one JSON record "
                             "per line, streamed")


def read_texts(parts: list[str], file: str | None, stdin: TextIO | None = None) -> list[str]:
    """Texts from the arguments, then the file; ``-`` reads stdin once, line by line."""
    stream = stdin or sys.stdin
    texts: list[str] = []
    sources = [*parts, *([file] if file is not None else [])]
    for i, part in enumerate(sources):
        from_file = file is not None and i == len(sources) - 1
        if part == STDIN_ARG:
            texts.extend(_lines(stream.read()))
        elif from_file:
            try:
                with open(part, encoding="utf-8") as fh:
                    texts.extend(_lines(fh.read()))
            except OSError as exc:
                raise FilesystemError(f"Cannot read '{part}': {exc.strerror}") from exc
        elif not part.strip():
            raise ValidationError(f"Text {i + 1} is empty")
        else:
            texts.append(part)
    return texts


def _lines(text: str) -> Iterator[str]:
    return (line for line in text.splitlines() if line.strip())


def handle(args: argparse.Namespace, out: Output) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if out.json and args.format == "jsonl":
        raise ValidationError("--json and --format jsonl are two output formats; pick one")
    texts = read_texts(args.texts, args.file)
    if not texts:
        raise ValidationError("No texts to embed: give TEXT arguments, --file F, or - for stdin")
    from mlxk2.ops import embed as ops
    from mlxk2.output import embed as render

    model = ops.open_encoder(args.model)
    options = ops.EmbedOptions(batch=args.batch, normalize=args.normalize,
                               dimensions=args.dimensions)
    encoder = model.encoder
    ops.check_options(encoder, options)
    records = ops.embed_texts(encoder, texts, options)
    normalized = encoder.normalize if args.normalize is None else args.normalize
    if out.json:
        result = ops.EmbedResult(model.name, list(records), normalized, encoder.max_tokens)
        return out.success("embed", result.to_dict())
    truncated = 0
    progress = _progress(out, len(texts)) if args.format == "jsonl" else None
    try:
        for record in records:
            truncated += record.truncated
            out.write(render.jsonl_line(record, model.name) if args.format == "jsonl"
                      else render.record_line(record))
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    note = render.truncation_note(truncated, encoder.max_tokens)
    if note:
        out.warn(note)
    return 0


def _progress(out: Output, total: int):  # type: ignore[no-untyped-def]
    """A bar on stderr for a person at a terminal; none when stderr is a file or pipe."""
    if not out.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="text", file=out.stderr, leave=False)
