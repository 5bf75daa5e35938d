"""OpenBLAS under MLX: the shim's arithmetic, the binding, its fallbacks, greedy parity.

The binding must happen before the first ``import mlx.core`` of a process, so
everything that binds runs in a fresh subprocess.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlxk2.engine import blas
from tests.fixtures.cli import REPO_ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the binding is Linux-only")

ROW_MAJOR, COL_MAJOR = 101, 102
NO_TRANS, TRANS = 111, 112

STATUS_SCRIPT = """
import json, sys
from mlxk2.engine import blas
status = blas.ensure_blas()
import mlx.core as mx
import numpy as np
x = np.arange(1, 65, dtype=np.float32).reshape(1, 64) / 64
w = np.linspace(-1, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
got = np.array(mx.matmul(mx.array(x), mx.array(w).T))
print(json.dumps({"status": status.to_dict(),
                  "resolved": blas._defining_file("cblas_sgemm"),
                  "one_row_error": float(np.abs(got - x @ w.T).max())}))
"""


def blas_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (blas.ENV_SWITCH, "CC")}
    env.update(XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPO_ROOT / "src"), **extra)
    return env


def run_python(script: str, env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def blas_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG cache with the shim built once for the session."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    run_python(STATUS_SCRIPT, blas_env(cache))
    return cache


def openblas_setup(cache: Path, monkeypatch: pytest.MonkeyPatch) -> blas._Setup:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv(blas.ENV_SWITCH, raising=False)
    setup = blas._setup()
    assert setup.shim is not None and setup.library is not None, setup.reason
    return setup


def test_shim_one_row_products_match_numpy_in_every_layout(blas_cache, monkeypatch):
    """M == 1 goes to sgemv: transposes, leading dimensions, alpha and beta all hold."""
    setup = openblas_setup(blas_cache, monkeypatch)
    openblas = ctypes.CDLL(str(setup.library))
    shim = ctypes.CDLL(str(setup.shim))  # RTLD_LOCAL: this process's mlx is untouched
    shim.mlxk2_blas_shim_set.argtypes = [ctypes.c_void_p] * 4
    shim.mlxk2_blas_shim_set(*[blas._address(openblas, f"scipy_cblas_{n}")
                               for n in ("sgemm", "sgemv", "dgemm", "cgemm")])
    shim.mlxk2_blas_shim_sgemv_routed.restype = ctypes.c_ulong
    sgemm = shim.cblas_sgemm
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    rng = np.random.default_rng(1)
    n, k, pad = 37, 29, 3
    for order in (ROW_MAJOR, COL_MAJOR):
        for trans_a in (NO_TRANS, TRANS):
            for trans_b in (NO_TRANS, TRANS):
                for m, alpha, beta in ((1, 1.0, 0.0), (1, 0.5, 0.25), (3, 1.5, 0.5)):
                    a = rng.standard_normal((m, k), dtype=np.float32)
                    b = rng.standard_normal((k, n), dtype=np.float32)
                    c0 = rng.standard_normal((m, n), dtype=np.float32)
                    want = alpha * (a @ b) + beta * c0

                    def stored(op, transposed, order=order):
                        # The matrix as BLAS reads it: transposed if asked, in
                        # row- or column-major order, each line padded by ``pad``.
                        mat = op.T if transposed else op
                        if order == COL_MAJOR:
                            mat = mat.T
                        buf = np.zeros((mat.shape[0], mat.shape[1] + pad), np.float32)
                        buf[:, : mat.shape[1]] = mat
                        return buf, buf.shape[1]

                    a_buf, lda = stored(a, trans_a == TRANS)
                    b_buf, ldb = stored(b, trans_b == TRANS)
                    c_buf, ldc = stored(c0, False)
                    if beta == 0.0:
                        c_buf[:, :] = np.nan  # BLAS must not read C when beta is 0
                    before = shim.mlxk2_blas_shim_sgemv_routed()
                    sgemm(order, trans_a, trans_b, m, n, k, alpha, a_buf.ctypes.data, lda,
                          b_buf.ctypes.data, ldb, beta, c_buf.ctypes.data, ldc)
                    got = c_buf[:, : (n if order == ROW_MAJOR else m)]
                    got = got if order == ROW_MAJOR else got.T
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                               err_msg=f"{order} {trans_a} {trans_b} m={m}")
                    routed = shim.mlxk2_blas_shim_sgemv_routed() - before
                    assert routed == (1 if m == 1 else 0)


def test_inference_process_binds_openblas_and_mlx_calls_it(blas_cache):
    result = run_python(STATUS_SCRIPT, blas_env(blas_cache))
    status = result["status"]
    assert status["backend"] == "openblas" and status["verified"] is True, status
    assert "scipy_openblas" in Path(status["library"]).name
    assert result["resolved"] == os.path.realpath(status["shim"])
    assert status["threads"] == len(os.sched_getaffinity(0))
    assert result["one_row_error"] < 1e-5


def test_blas_switch_off_keeps_stock(blas_cache):
    result = run_python(STATUS_SCRIPT, blas_env(blas_cache, MLXK2_BLAS="0"))
    assert result["status"]["backend"] == "stock"
    assert "MLXK2_BLAS=0" in result["status"]["reason"]
    assert result["resolved"] is None  # no cblas_sgemm in the global scope at all
    assert result["one_row_error"] < 1e-5


def test_mlx_imported_first_stays_stock_and_says_so(blas_cache):
    script = "import mlx.core\n" + STATUS_SCRIPT
    status = run_python(script, blas_env(blas_cache))["status"]
    assert status["backend"] == "stock"
    assert "imported before" in status["reason"]


def test_unbuildable_shim_falls_back_with_a_recorded_reason(tmp_path):
    result = run_python(STATUS_SCRIPT, blas_env(tmp_path, CC=str(tmp_path / "no-such-cc")))
    status = result["status"]
    assert status["backend"] == "stock" and not status["verified"]
    assert "cannot build the BLAS shim" in status["reason"]
    assert result["resolved"] is None
    assert result["one_row_error"] < 1e-5
    record = json.loads(Path(status["shim"]).with_suffix(".json").read_text())
    assert record["reason"] == status["reason"]


def test_corrupt_cached_shim_is_rebuilt(tmp_path, monkeypatch):
    setup = openblas_setup(tmp_path, monkeypatch)
    setup.shim.parent.mkdir(parents=True)
    setup.shim.write_bytes(b"not a shared library")
    status = run_python(STATUS_SCRIPT, blas_env(tmp_path))["status"]
    assert status["backend"] == "openblas" and status["verified"], status


def test_shim_with_wrong_results_is_pointed_back_at_stock(tmp_path, monkeypatch):
    """A shim that loads but computes wrong products is caught after mlx binds to it."""
    setup = openblas_setup(tmp_path, monkeypatch)
    right = "target_sgemv(order, gemv_trans, rows, cols, alpha,"
    source = blas._shim_source().decode()
    assert right in source
    broken = tmp_path / "broken.c"
    broken.write_text(source.replace(right, right.replace("alpha", "-alpha")))
    setup.shim.parent.mkdir(parents=True)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(setup.shim), str(broken)],
                   check=True)
    result = run_python(STATUS_SCRIPT, blas_env(tmp_path))
    status = result["status"]
    assert status["backend"] == "stock" and not status["verified"]
    assert "disagree with numpy" in status["reason"]
    # Still bound to the shim, which now forwards to the wheel's own BLAS.
    assert result["resolved"] == os.path.realpath(setup.shim)
    assert result["one_row_error"] < 1e-5


GREEDY_SCRIPT = """
import json, sys
from pathlib import Path
from mlxk2.engine import blas
status = blas.ensure_blas()
import mlx.core as mx
from mlxk2.engine.chat import build_prompt_tokens
from mlxk2.engine.generate import generate
from mlxk2.engine.load import load_model
from mlxk2.engine.sampling import SamplingParams
loaded = load_model(Path(sys.argv[1]))
prompt = build_prompt_tokens(loaded.tokenizer, [{"role": "user", "content": sys.argv[2]}])
*_, done = generate(loaded, prompt, SamplingParams(), max_tokens=48)
logits = loaded.model(mx.array(prompt)[None])[0, -1]
print(json.dumps({"backend": status.backend, "tokens": list(done.token_ids),
                  "logits": logits.tolist()}))
"""


@pytest.fixture(scope="session")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlxk2.engine.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("fp32") / "model", dtype="float32")


@pytest.mark.parametrize("text", ["What is the capital of France?", "Hello! How are you?"])
def test_greedy_tokens_equal_with_and_without_blas(blas_cache, fp32_model, text):
    """float32 sums in another order move logits by ~1e-6; argmax only flips on a tie
    that close, so the tokens must match exactly and the logits to 1e-4."""
    runs = {switch: run_python(GREEDY_SCRIPT, blas_env(blas_cache, MLXK2_BLAS=switch),
                               str(fp32_model), text) for switch in ("1", "0")}
    assert runs["1"]["backend"] == "openblas" and runs["0"]["backend"] == "stock"
    assert len(runs["1"]["tokens"]) >= 5
    assert runs["1"]["tokens"] == runs["0"]["tokens"]
    gap = np.abs(np.array(runs["1"]["logits"]) - np.array(runs["0"]["logits"])).max()
    assert gap < 1e-4


def test_configured_blas_reports_without_loading_anything(blas_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(blas_cache))
    monkeypatch.delenv(blas.ENV_SWITCH, raising=False)
    status = blas.configured_blas()
    assert status.backend == "openblas" and status.verified  # the fixture's run verified it
    monkeypatch.setenv(blas.ENV_SWITCH, "0")
    assert blas.configured_blas().backend == "stock"


def test_default_threads_follow_affinity_or_openblas_env(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert blas.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert blas.default_threads() == 1


def test_server_leaves_one_cpu_to_the_event_loop(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert (blas.default_threads(), blas.server_threads()) == (4, 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert blas.server_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert blas.server_threads() == 2
