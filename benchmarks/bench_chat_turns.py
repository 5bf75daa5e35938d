"""Time to first token as a chat grows: ``mlxk2 serve`` with and without its prompt
cache, against ``mlx_lm server``, on the same model in one run.

A chat front end sends the whole conversation every turn. One client holds a
conversation of ``--turns`` turns: each turn appends a new user message of a few
sentences to the history, streams a ``--tokens`` reply and appends that reply. A
server that keeps the previous turn's KV cache prefills only the new messages;
one that does not prefills the whole history again, so its first token comes
later every turn. Three servers run side by side as real processes on 127.0.0.1:
mlxk2 (default ``--prompt-cache 16``), mlxk2 with ``--prompt-cache 0`` and
mlx_lm, whose server also caches prompts. Conversations alternate between them;
each ``--repeat`` starts a fresh, distinct conversation. Reported per turn: the
prompt's token count and each server's median time to first content token.

Usage: python benchmarks/bench_chat_turns.py [--turns 8] [--tokens 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_serve import build_model, start, stop, stop_token_ids, stream_once

SENTENCES = (
    "The harbour town wakes before the sun, and the fishing boats leave in a line. "
    "Gulls follow them out past the lighthouse while the bakery opens its shutters. "
    "By noon the market square is full of voices, crates and the smell of bread. "
)


def conversation(server, turns: int, tokens: int, banned: list[int], tag: str
                 ) -> list[tuple[int, float]]:
    """(prompt tokens, seconds to first token) for each turn of one conversation."""
    messages: list[dict[str, str]] = []
    timings = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"[{tag} turn {turn}] {SENTENCES}"
                                                    "What happens next?"})
        sample = stream_once(server, messages, tokens, banned)
        messages.append({"role": "assistant", "content": sample.text})
        timings.append((sample.prompt_tokens, sample.ttft))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="Reply tokens per turn")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp), "small-bf16")
        banned = stop_token_ids(model)
        servers = {"mlxk2": start("mlxk2", model),
                   "mlxk2 no cache": start("mlxk2", model, "--prompt-cache", "0"),
                   "mlx_lm": start("mlx_lm", model)}
        try:
            runs: dict[str, list[list[tuple[int, float]]]] = {name: [] for name in servers}
            for repeat in range(args.repeat):
                order = list(servers.items())
                for name, server in order[repeat % len(order):] + order[:repeat % len(order)]:
                    runs[name].append(conversation(server, args.turns, args.tokens, banned,
                                                   f"{name} {repeat}"))
        finally:
            for server in servers.values():
                stop(server)

    print(f"\n## small-bf16 chat: {args.turns} turns, {args.tokens}-token replies, "
          f"median TTFT of {args.repeat} conversations")
    names = list(runs)
    print(f"{'turn':>4} {'prompt tokens':>14} " + " ".join(f"{n:>15}" for n in names))
    for turn in range(args.turns):
        prompt = runs["mlxk2"][0][turn][0]
        cells = [statistics.median(conv[turn][1] for conv in runs[n]) * 1000 for n in names]
        print(f"{turn + 1:>4} {prompt:>14} " + " ".join(f"{c:>13.0f}ms" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
