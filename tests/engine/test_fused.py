"""Compiled RMSNorm and RoPE on a CPU: the same numbers, the same greedy tokens, the same tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlxk2.engine.batch import GenerationRequest, ModelBatch
from mlxk2.engine.events import Finished
from mlxk2.engine.fused import FusedRMSNorm, FusedRoPE, fuse_cpu_ops, unfuse
from mlxk2.engine.sampling import SamplingParams
from tests.fixtures.cli import REPO_ROOT

QUESTIONS = ("What is the capital of France?", "Name a colour of the sky.",
             "Count from one to five.")


def test_fused_norm_and_rope_equal_the_stock_modules_at_decode_shapes() -> None:
    norm, rope = nn.RMSNorm(64, eps=1e-5), nn.RoPE(64, base=100000.0)
    norm.weight = mx.random.normal((64,), key=mx.random.key(1))
    x = mx.random.normal((3, 1, 64), key=mx.random.key(2))
    heads = mx.random.normal((3, 4, 1, 64), key=mx.random.key(3))
    offset = mx.array([5, 17, 130])
    want = (norm(x), rope(heads, offset=offset), rope(heads, offset=7))
    norm.__class__, rope.__class__ = FusedRMSNorm, FusedRoPE
    got = (norm(x), rope(heads, offset=offset), rope(heads, offset=7))
    for fused, stock in zip(got, want, strict=True):
        assert mx.allclose(fused, stock, rtol=1e-6, atol=1e-6).item()


def test_fusing_swaps_only_the_exact_classes_and_keeps_the_parameters(smollm2: Any) -> None:
    model = smollm2.model
    before = {name: type(m) for name, m in model.named_modules()}
    try:
        unfuse(model)
        parameters = len(nn.utils.tree_flatten(model.parameters()))
        swapped = fuse_cpu_ops(model)
        layers = len(model.model.layers)
        assert swapped == 3 * layers + 1  # two norms and a RoPE per layer, the final norm
        assert len(nn.utils.tree_flatten(model.parameters())) == parameters
        assert all(type(m) is not nn.RMSNorm for _, m in model.named_modules())
    finally:
        for name, module in model.named_modules():
            module.__class__ = before[name]


GREEDY_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from mlxk2.engine.blas import ensure_blas
ensure_blas(1)  # before the test module below imports mlx
from mlxk2.engine.load import load_model
from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.fused import unfuse
from tests.engine.test_fused import QUESTIONS, greedy_batch
loaded = load_model(Path(sys.argv[1]), cpu_dtype="float32", threads=1)
prompts = [build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": q}])
           for q in QUESTIONS]
fused = greedy_batch(loaded, prompts, 12)
unfuse(loaded.model)
stock = greedy_batch(loaded, prompts, 12)
print(json.dumps({"blas": loaded.blas.backend, "fused": fused, "stock": stock}))
"""


def greedy_batch(loaded: Any, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """Every prompt in one batch (decode steps of several rows), greedy."""
    batch = ModelBatch(loaded, max_batch=len(prompts), prompt_cache=0)
    events: list[list[Any]] = [[] for _ in prompts]
    for prompt, sink in zip(prompts, events, strict=True):
        batch.add(GenerationRequest(prompt, tokens, SamplingParams(temperature=0.0)),
                  sink.append)
    try:
        while batch.busy:
            batch.step()
    finally:
        batch.close()
    return [list(next(e.token_ids for e in row if isinstance(e, Finished))) for row in events]


def test_greedy_tokens_equal_with_and_without_fusing_on_the_real_model(
        smollm2_dir: Path) -> None:
    """float32 with OpenBLAS, as ``--cpu-dtype auto`` runs it, in a process of its own
    (the suite runs with the stock BLAS, where float32 decoding is slow)."""
    env = {k: v for k, v in os.environ.items() if k != "MLXK2_BLAS"}
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    proc = subprocess.run([sys.executable, "-c", GREEDY_SCRIPT, str(smollm2_dir),
                           str(REPO_ROOT)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(len(row) >= 4 for row in runs["stock"])
    assert runs["fused"] == runs["stock"]
