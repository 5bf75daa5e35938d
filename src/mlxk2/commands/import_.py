"""Import a GGUF model (llama.cpp, Ollama, LM Studio) into a new MLX workspace folder.

  mlxk2 import ./model.Q4_K_M.gguf ./my-model     a GGUF file
  mlxk2 import TheBloke/Some-GGUF ./my-model      a GGUF repo in the Hugging Face cache
  mlxk2 import ollama:qwen2.5:0.5b ./qwen         an Ollama model (from $OLLAMA_MODELS)

F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors keep their exact values. Other types
(K-quants such as Q4_K_M, IQ types) are dequantised with the gguf package and
quantised again by MLX (--bits, --group-size); the result then says lossless: false.
Architectures: llama (also mistral and SmolLM), qwen2, qwen3. The result is
written beside TARGET_DIR, checked with mlx-lm and the health rules, and renamed
into place; nothing is written into the Hugging Face cache.
"""

from __future__ import annotations

import argparse

from mlxk2.output.sink import Output

# The CLI's choices; ``mlxk2.ops.import_`` validates the same sets (a test keeps them equal).
BITS = (4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = ("float16", "bfloat16", "float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="A .gguf file, a cached GGUF model, or ollama:NAME[:TAG]")
    parser.add_argument("target", nargs="?", default=None, metavar="TARGET_DIR",
                        help="New or empty destination folder (default: ./<name>-mlx)")
    parser.add_argument("--bits", type=int, choices=BITS, default=None,
                        help="Requantisation width for K-quant and IQ tensors "
                             "(default: as many bits as the source type, at least 4)")
    parser.add_argument("--group-size", type=int, choices=GROUP_SIZES, default=None,
                        help="Requantisation group size for K-quant and IQ tensors (default: 64)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="Cast floating-point tensors (default: keep them as stored)")


def handle(args: argparse.Namespace, out: Output) -> int:
    from mlxk2.ops.import_ import plan_import, run_import
    from mlxk2.output.convert import progress_bar
    from mlxk2.output.import_ import render_import

    plan = plan_import(args.source, args.target, bits=args.bits, group_size=args.group_size,
                       dtype=args.dtype)
    with progress_bar(out) as progress:
        result = run_import(plan, progress)
    return out.success("import", result.to_dict(), render_import)
