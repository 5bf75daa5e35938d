"""``POST /v1/embeddings`` on the real all-MiniLM-L6-v2, through the official openai client."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from mlxk2.cache.layout import store_snapshot
from mlxk2.server import ModelProvider, ServerConfig, Worker
from mlxk2.server.embed_batcher import EmbeddingBatcher
from tests.fixtures.embedding import MINILM, minilm_folder, minilm_reference
from tests.fixtures.models import CHAT, DemoCache
from tests.fixtures.server import LiveServer, free_port, raw_request, start_server

CAT, FELINE, STOCKS = "A cat sits on the mat", "A feline rests on a rug", "Stock markets fell today"


def _reference(text: str) -> np.ndarray:
    ref = minilm_reference()
    return np.array(ref["embeddings"][ref["sentences"].index(text)])


@dataclass
class Servers:
    open: LiveServer
    keyed: LiveServer


@pytest.fixture(scope="module")
def servers(demo_cache: DemoCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A cache with MiniLM and the demo chat model; one open server, one with an API key."""
    root = tmp_path_factory.mktemp("embed_hub")
    store_snapshot(root, MINILM, minilm_folder())
    store_snapshot(root, CHAT, demo_cache.paths[CHAT])
    made, stoppers = [], []
    for key in (None, "sekrit"):
        config = ServerConfig(port=free_port(), keep_alive=None, max_loaded_models=2,
                              api_key=key)
        worker = Worker()
        worker.start()
        provider = ModelProvider(worker, max_loaded=2, keep_alive=None, root=root)
        live, stop = start_server(config, provider)
        made.append(live)
        stoppers.append(stop)
    yield Servers(*made)
    for stop in stoppers:
        stop()


def test_a_string_embeds_like_sentence_transformers(servers: Servers) -> None:
    # The openai client asks for base64 by default and decodes it itself.
    reply = servers.open.client().embeddings.create(model=MINILM, input=CAT)
    assert reply.object == "list" and reply.model == MINILM
    assert len(reply.data) == 1 and reply.data[0].index == 0
    vector = np.array(reply.data[0].embedding)
    assert vector.shape == (384,)
    assert float(vector @ _reference(CAT)) > 1 - 1e-5
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (8, 8)


def test_a_list_keeps_its_order_and_its_meaning(servers: Servers) -> None:
    reply = servers.open.client().embeddings.create(model=MINILM, input=[CAT, FELINE, STOCKS],
                                                    encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1, 2]
    cat, feline, stocks = (np.array(d.embedding) for d in reply.data)
    assert cat @ feline > cat @ stocks + 0.3
    assert float(stocks @ _reference(STOCKS)) > 1 - 1e-5
    assert reply.usage.prompt_tokens == 8 + 9 + 6


def test_base64_decodes_to_the_float_vector(servers: Servers) -> None:
    client = servers.open.client()
    encoded = client.embeddings.create(model=MINILM, input=CAT, encoding_format="base64")
    assert isinstance(encoded.data[0].embedding, str)
    decoded = np.frombuffer(base64.b64decode(encoded.data[0].embedding), dtype="<f4")
    floats = client.embeddings.create(model=MINILM, input=CAT, encoding_format="float")
    np.testing.assert_array_equal(decoded, np.array(floats.data[0].embedding, dtype=np.float32))


def test_dimensions_truncate_and_renormalise(servers: Servers) -> None:
    reply = servers.open.client().embeddings.create(model=MINILM, input=CAT, dimensions=32)
    vector = np.array(reply.data[0].embedding)
    head = _reference(CAT)[:32]
    np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-5)


def test_token_id_inputs_embed_like_their_text(servers: Servers, minilm: Any) -> None:
    ids = [list(t.ids) for t in minilm.tokenize([CAT, STOCKS])]
    client = servers.open.client()
    one = client.embeddings.create(model=MINILM, input=ids[0], encoding_format="float")
    both = client.embeddings.create(model=MINILM, input=ids, encoding_format="float")
    assert float(np.array(one.data[0].embedding) @ _reference(CAT)) > 1 - 1e-5
    assert float(np.array(both.data[1].embedding) @ _reference(STOCKS)) > 1 - 1e-5
    assert both.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_an_over_long_text_is_cut_and_counted_in_a_header(servers: Servers) -> None:
    reply = raw_request(servers.open.url, "POST", "/v1/embeddings",
                        {"model": MINILM, "input": [" ".join(["word"] * 300), CAT]})
    assert reply.status == 200
    assert reply.headers["x-mlxk2-truncated-inputs"] == "1"
    assert reply.json()["usage"]["prompt_tokens"] == 256 + 8


def _error(server: LiveServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = raw_request(server.url, "POST", path, body)
    return reply.status, reply.json()["error"]


def test_chat_on_an_embedding_model_and_embeddings_on_a_chat_model_are_400s(
        servers: Servers) -> None:
    status, error = _error(servers.open, "/v1/chat/completions",
                           {"model": MINILM, "messages": [{"role": "user", "content": "hi"}]})
    assert (status, error["code"]) == (400, "model_incompatible")
    assert error["message"] == (f"Model '{MINILM}' is an embedding model and cannot generate "
                                "text; use /v1/embeddings")
    status, error = _error(servers.open, "/v1/embeddings", {"model": CHAT, "input": "hi"})
    assert (status, error["code"]) == (400, "model_incompatible")
    assert error["message"] == (f"Model '{CHAT}' is a chat model, not an embedding model; "
                                "use /v1/chat/completions")
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        servers.open.client().embeddings.create(model=CHAT, input="hi")


@pytest.mark.parametrize("body, param, message", [
    ({"input": "x", "encoding": "float"}, "encoding", "Extra inputs are not permitted"),
    ({"input": ""}, "input", "input[0] is an empty string."),
    ({"input": []}, "input", None),
    ({"input": [[101, 99999, 102]]}, "input", "input[0] holds a token id outside the vocabulary."),
    ({"input": [[101] * 300]}, "input", f"input[0] has 300 tokens; '{MINILM}' takes at most 256."),
    ({"input": "x", "dimensions": 385}, "dimensions",
     f"dimensions must be at most 384 for '{MINILM}'."),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", None),
])
def test_bad_requests_are_400s_naming_the_field(servers: Servers, body: dict[str, Any],
                                                param: str, message: str | None) -> None:
    status, error = _error(servers.open, "/v1/embeddings", {"model": MINILM, **body})
    assert status == 400 and error["param"].split(".")[0] == param
    if message is not None:
        assert message in error["message"]


def test_models_lists_embedding_models_with_their_capability(servers: Servers) -> None:
    models = {m["id"]: m for m in raw_request(servers.open.url, "GET", "/v1/models").json()["data"]}
    assert models[MINILM]["capabilities"] == ["embeddings"]
    assert models[CHAT]["capabilities"] == ["text-generation", "chat"]


def test_the_api_key_and_metrics_cover_embeddings(servers: Servers) -> None:
    server = servers.keyed
    status, error = _error(server, "/v1/embeddings", {"model": MINILM, "input": "x"})
    assert (status, error["code"]) == (401, "invalid_api_key")
    reply = server.client().embeddings.create(model=MINILM, input="x")
    assert reply.usage.prompt_tokens == 3
    metrics = raw_request(server.url, "GET", "/metrics",
                          headers={"Authorization": "Bearer sekrit"}).body.decode()
    assert 'mlxk2_requests_total{endpoint="/v1/embeddings",status="200"} 1.0' in metrics
    assert 'mlxk2_requests_total{endpoint="/v1/embeddings",status="401"} 1.0' in metrics
    assert "mlxk2_prompt_tokens_total 3.0" in metrics


def test_concurrent_requests_get_the_answers_they_get_alone(servers: Servers) -> None:
    texts = [CAT, FELINE, STOCKS, "hello", "MLX runs on Apple silicon, and on Linux CPUs too."]
    client = servers.open.client()
    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        replies = list(pool.map(
            lambda t: client.embeddings.create(model=MINILM, input=t, encoding_format="float"),
            texts))
    ref = minilm_reference()
    for text, reply in zip(texts, replies, strict=True):
        expected = np.array(ref["embeddings"][ref["sentences"].index(text)])
        assert float(np.array(reply.data[0].embedding) @ expected) > 1 - 1e-5


def test_concurrent_inputs_share_forward_passes_within_the_token_budget(minilm: Any) -> None:
    texts = [CAT, FELINE, STOCKS, "hello", "one more", "and the last"]
    ids = [t.ids for t in minilm.tokenize(texts)]
    worker = Worker()
    worker.start()
    seen: list[list[int]] = []

    def run(fn: Any, inputs: list[Any]) -> concurrent.futures.Future[Any]:
        seen.append([len(x) for x in inputs])
        return worker.call(fn, inputs)

    async def embed_all(batcher: EmbeddingBatcher) -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.embed([one]) for one in ids))

    try:
        shared = EmbeddingBatcher(minilm, run)
        together = asyncio.run(embed_all(shared))
        assert 1 <= shared.passes < len(texts)
        seen.clear()
        tight = EmbeddingBatcher(minilm, run, token_budget=20)
        apart = asyncio.run(embed_all(tight))
        assert tight.passes == len(seen) > shared.passes
        assert all(len(b) == 1 or len(b) * max(b) <= 20 for b in seen)
    finally:
        worker.stop()
    for i, one in enumerate(ids):
        alone = minilm.forward([one])[0]
        assert np.abs(together[i][0] - alone).max() < 1e-5
        assert np.abs(apart[i][0] - alone).max() < 1e-5


def test_serve_preloads_an_embedding_model(servers: Servers, demo_cache: DemoCache,
                                           tmp_path: Path) -> None:
    root = servers.open.provider.root
    worker = Worker()
    worker.start()
    try:
        provider = ModelProvider(worker, root=root)
        entry = provider.preload(MINILM)
        assert entry.embedder is not None and entry.embedder.loaded.dimensions == 384
    finally:
        worker.stop()
