"""The CPU dtype policy and the BLAS binding, as the server reports them in /health."""

from __future__ import annotations

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
