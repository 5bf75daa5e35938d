"""Write a transformed copy of a model into a new workspace folder (experimental).

  mlxk2 convert SRC DST --repair-index     rebuild model.safetensors.index.json from the shards
  mlxk2 convert SRC DST --quantize 4       quantise with mlx-lm (2, 3, 4, 6 or 8 bits)
  mlxk2 convert SRC DST --dtype float32    cast the floating-point weights

SRC is a cache model (name, name@hash) or a workspace path; it is never modified.
DST must be a new or empty folder outside the Hugging Face cache. The result is
written beside DST and renamed into place only once it passes the health check.

This is an alpha feature: set MLXK2_ENABLE_ALPHA_FEATURES=1 to use it.
"""

from __future__ import annotations

import argparse
import os

from mlxk2.errors import ValidationError
from mlxk2.output.sink import Output

ALPHA_ENV = "MLXK2_ENABLE_ALPHA_FEATURES"
# The CLI's choices; ``mlxk2.ops.convert`` validates the same sets (a test keeps them equal).
QUANT_BITS = (2, 3, 4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = ("float16", "bfloat16", "float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="Model: org/name, name@hash, or a workspace path (./dir)")
    parser.add_argument("target", help="New or empty destination folder, outside the cache")
    operation = parser.add_mutually_exclusive_group(required=True)
    operation.add_argument(
        "--repair-index",
        action="store_true",
        help="Rebuild model.safetensors.index.json from the shards present (reads headers only)",
    )
    operation.add_argument(
        "--quantize",
        type=int,
        choices=QUANT_BITS,
        metavar="BITS",
        help="Quantise with mlx-lm to 2, 3, 4, 6 or 8 bits (source must not be quantised)",
    )
    operation.add_argument(
        "--dtype",
        choices=DTYPES,
        help="Cast floating-point weights, keeping quantised tensors as they are. "
        "On CPU (Linux) float32 often decodes much faster than bfloat16 (up to 2x), "
        "at twice the size",
    )
    parser.add_argument(
        "--q-group-size",
        type=int,
        choices=GROUP_SIZES,
        default=None,
        help="Quantisation group size for --quantize (default: 64)",
    )


def handle(args: argparse.Namespace, out: Output) -> int:
    if os.environ.get(ALPHA_ENV) != "1":
        raise ValidationError(
            f"convert is an experimental (alpha) feature: set {ALPHA_ENV}=1 to enable it"
        )
    from mlxk2.ops.convert import DTYPE, QUANTIZE, REPAIR_INDEX, plan_convert, run_convert
    from mlxk2.output.convert import progress_bar, render_convert

    if args.repair_index:
        operation = REPAIR_INDEX
    elif args.quantize is not None:
        operation = QUANTIZE
    else:
        operation = DTYPE
    plan = plan_convert(
        args.source,
        args.target,
        operation,
        bits=args.quantize,
        group_size=args.q_group_size,
        dtype=args.dtype,
    )
    with progress_bar(out) as progress:
        result = run_convert(plan, progress)
    return out.success("convert", result.to_dict(), render_convert)
