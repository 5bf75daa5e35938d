"""The CPU dtype policy: the decision table, dequantising real models, and the CLI's report."""

from __future__ import annotations

import json

import pytest

from mlxk2.engine.dtype import AUTO, FLOAT32, NATIVE, apply_cpu_dtype, decide, float32_size
from mlxk2.engine.load import load_model
from tests.fixtures.cli import cli_env, run_subprocess
from tests.fixtures.models import CHAT, CHAT_4BIT

SMALL, BUDGET = 1_000, 10_000


def choose(policy: str, stored: str = "4-bit", size: int = SMALL, **facts) -> str:
    facts = {"on_cpu": True, "blas_active": True, "budget_bytes": BUDGET, **facts}
    return decide(policy, stored=stored, float32_bytes=size, **facts)[0]


def test_auto_dequantises_a_quantised_model_that_fits_the_budget():
    assert choose(AUTO) == FLOAT32
    assert choose(AUTO, stored="8-bit") == FLOAT32


def test_auto_keeps_the_model_as_stored_over_the_budget_or_off_the_fast_path():
    assert choose(AUTO, size=BUDGET + 1) == "4-bit"
    assert choose(AUTO, budget_bytes=None) == "4-bit"  # RAM unknown
    assert choose(AUTO, on_cpu=False) == "4-bit"  # Metal
    assert choose(AUTO, blas_active=False) == "4-bit"  # the reference BLAS is no faster
    assert choose(AUTO, stored="bfloat16") == "bfloat16"


def test_native_and_float32_do_what_they_say():
    assert choose(NATIVE) == "4-bit"
    assert choose(FLOAT32, size=BUDGET * 10, on_cpu=False, blas_active=False) == FLOAT32
    assert choose(FLOAT32, stored="bfloat16") == FLOAT32
    with pytest.raises(ValueError, match="unknown CPU dtype policy"):
        choose("float64")


def test_float32_size_counts_quantised_weights_as_dequantised(demo_cache, tiny_chat):
    from mlx.utils import tree_flatten

    quantised = load_model(demo_cache.paths[CHAT_4BIT]).model
    elements = sum(v.size for _, v in tree_flatten(tiny_chat.model.parameters()))
    assert float32_size(quantised) == float32_size(tiny_chat.model) == 4 * elements


def test_dequantising_gives_float32_weights_equal_to_mx_dequantize(demo_cache):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    model = load_model(demo_cache.paths[CHAT_4BIT]).model
    q_proj = model.model.layers[0].self_attn.q_proj
    want = mx.dequantize(q_proj.weight, q_proj.scales.astype(mx.float32),
                         q_proj.biases.astype(mx.float32), q_proj.group_size, q_proj.bits)
    choice = apply_cpu_dtype(model, AUTO, blas_active=True, budget_bytes=10**9)
    assert (choice.policy, choice.stored, choice.dtype) == (AUTO, "4-bit", FLOAT32)
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
                   for _, m in model.named_modules())
    assert {v.dtype for _, v in tree_flatten(model.parameters())} == {mx.float32}
    assert mx.array_equal(model.model.layers[0].self_attn.q_proj.weight, want).item()


def test_over_the_budget_the_model_stays_quantised(demo_cache):
    import mlx.nn as nn

    model = load_model(demo_cache.paths[CHAT_4BIT]).model
    choice = apply_cpu_dtype(model, AUTO, blas_active=True, budget_bytes=1)
    assert choice.dtype == "4-bit" and not choice.converted
    assert "exceeds the budget" in choice.reason
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)


@pytest.mark.parametrize(("extra", "dtype", "blas"), [
    ({}, FLOAT32, "openblas"),
    ({"MLXK2_CPU_FP32_BUDGET": "1000"}, "4-bit", "openblas"),
    ({"MLXK2_BLAS": "0"}, "4-bit", "stock"),
])
def test_run_json_reports_the_dtype_auto_chose(demo_cache, extra, dtype, blas):
    result = run_subprocess("run", CHAT_4BIT, "Hello", "--max-tokens", "4", "--json",
                            env=cli_env(demo_cache.hf_home, **extra))
    assert result.code == 0, result.stderr
    timings = json.loads(result.stdout)["data"]["timings"]
    assert (timings["cpu_dtype"], timings["cpu_dtype_policy"], timings["blas"]) == \
        (dtype, AUTO, blas)


def test_run_verbose_names_the_blas_and_the_dtype(demo_cache):
    result = run_subprocess("run", CHAT, "Hello", "--max-tokens", "4", "--verbose",
                            "--cpu-dtype", "float32", "--threads", "1",
                            env=cli_env(demo_cache.hf_home))
    assert result.code == 0, result.stderr
    assert "BLAS: openblas" in result.stderr and "1 thread;" in result.stderr
    assert "dtype: float32 (from bfloat16)" in result.stderr


QUESTIONS = ("What is the capital of France?", "What is 2 + 2?",
             "What colour is the sky on a clear day?")


@pytest.mark.parametrize("question", QUESTIONS)
def test_dequantised_smollm2_gives_the_quantised_models_greedy_answer(smollm2_dir, tmp_path,
                                                                     question):
    """The real SmolLM2 (Q4_1, imported losslessly): float32 changes the arithmetic, not
    the answer."""
    answers = {}
    for policy in ("native", "auto"):
        result = run_subprocess("run", str(smollm2_dir), question, "--max-tokens", "24",
                                "--json", "--cpu-dtype", policy, env=cli_env(tmp_path))
        assert result.code == 0, result.stderr
        data = json.loads(result.stdout)["data"]
        answers[data["timings"]["cpu_dtype"]] = data["response"]
    assert set(answers) == {"4-bit", FLOAT32}
    assert answers[FLOAT32] == answers["4-bit"]
    assert answers[FLOAT32].strip()
