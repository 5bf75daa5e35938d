"""Human text and the terminal progress bar for ``convert``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mlxk2.output.format import human_size
from mlxk2.output.sink import Output

_OPERATIONS = {
    "repair-index": "rebuilt the shard index",
    "quantize": "quantised",
    "dtype": "cast the weights",
}


def render_convert(data: dict[str, Any], out: Output) -> str:
    """One sentence on what was written, then the size change and health."""
    what = _OPERATIONS.get(data["operation"], data["operation"])
    return (
        f"Converted {data['source']} -> {data['target']} ({what}).\n"
        f"{data['files_written']} files, {human_size(data['size_bytes_before'])} -> "
        f"{human_size(data['size_bytes_after'])}, {data['health']}."
    )


@contextlib.contextmanager
def progress_bar(out: Output) -> Iterator[Callable[[str, int, int], None] | None]:
    """A tqdm bar on stderr when it is a terminal (never in JSON mode); else no callback."""
    if out.json or not (hasattr(out.stderr, "isatty") and out.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=1, file=out.stderr, leave=False, unit="step", dynamic_ncols=True)

    def update(stage: str, done: int, total: int) -> None:
        if bar.desc != stage or bar.total != total:
            bar.reset(total=total)
            bar.set_description_str(stage)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
