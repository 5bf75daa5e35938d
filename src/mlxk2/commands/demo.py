"""Build a small MLX chat model with random weights, offline, in seconds.

It lets list, show, run and serve work end to end on a fresh machine:

  mlxk2 demo                       install mlxk2/demo-chat into the HF cache
  mlxk2 demo --path ./demo-model   build into a workspace folder instead
  mlxk2 demo --quantize 4          4-bit variant (mlxk2/demo-chat-4bit)
"""

from __future__ import annotations

import argparse

from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output

PRESET_CHOICES = ("tiny", "mid")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default=None,
                        help="Build into this new workspace folder instead of the cache")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default="tiny",
                        help="tiny: <1M parameters (default); mid: ~130M, for benchmarks")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None, metavar="BITS",
                        help="Quantise the weights with mlx-lm (4 or 8 bits)")
    parser.add_argument("--base", action="store_true",
                        help="A base model without a chat template")
    parser.add_argument("--seed", type=int, default=0, help="Weight seed (default: 0)")
    parser.add_argument("--embedding", action="store_true",
                        help="An embedding model instead (mlxk2/demo-embed, for mlxk2 embed)")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.demo import install_demo, install_demo_embedding
    from mlxk2.output.demo import render_demo

    if args.embedding:
        if args.path or args.quantize or args.base or args.preset != "tiny":
            raise ValidationError("--embedding builds one fixed model into the cache; "
                                  "it takes no --path, --preset, --quantize or --base")
        return out.success("demo", install_demo_embedding(seed=args.seed).to_dict(), render_demo)
    result = install_demo(path=args.path, preset=args.preset, quantize_bits=args.quantize,
                          chat_template=not args.base, seed=args.seed)
    return out.success("demo", result.to_dict(), render_demo)
