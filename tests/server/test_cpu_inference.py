"""The CPU dtype policy and the BLAS binding, as the server reports them in /health."""

from __future__ import annotations

import os

from mlxk2.server.provider import engine_loader
from tests.fixtures.models import CHAT_4BIT
from tests.fixtures.server import raw_request


def test_health_reports_each_models_cpu_dtype_and_the_blas(make_server):
    server = make_server(preload=CHAT_4BIT, loader=engine_loader("float32"))
    body = raw_request(server.url, "GET", "/health").json()
    (model,) = body["models"]
    assert model["name"] == CHAT_4BIT
    assert model["cpu_dtype"]["policy"] == "float32"
    assert (model["cpu_dtype"]["stored"], model["cpu_dtype"]["dtype"]) == ("4-bit", "float32")
    # This test process runs on stock MLX (tests/conftest.py), and says why.
    assert body["blas"]["backend"] == "stock" and body["blas"]["reason"]
    reply = server.client().chat.completions.create(
        model=CHAT_4BIT, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.usage.completion_tokens == 4


def test_serve_binds_openblas_before_a_requested_load_imports_mlx(serve_process):
    """No --model: the first model loads through POST /load on the MLX worker, which
    imports mlx itself; the binding must already be in place by then."""
    server = serve_process()
    assert raw_request(server.url, "GET", "/health").json()["blas"]["backend"] == "openblas"
    loaded = raw_request(server.url, "POST", f"/v1/models/{CHAT_4BIT}/load")
    assert loaded.status == 200, loaded.body
    body = raw_request(server.url, "GET", "/health").json()
    assert body["blas"]["backend"] == "openblas" and body["blas"]["verified"], body["blas"]
    assert body["blas"]["threads"] == max(1, len(os.sched_getaffinity(0)) - 1)
    (model,) = body["models"]
    assert (model["cpu_dtype"]["policy"], model["cpu_dtype"]["dtype"]) == ("auto", "float32")
