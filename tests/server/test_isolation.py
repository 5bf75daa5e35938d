"""Through the real server: one request's failure never reaches the streams beside it."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.fixtures.faults import POISON_TOKEN, FaultyLoader
from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request, sse_events

AWAY = {str(POISON_TOKEN): -100}


def _body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24, "temperature": 0, **extra}


def _stream_text(live: LiveServer, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The streamed text and any error chunks."""
    events = sse_events(live.url, "/v1/chat/completions", {**body, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    errors = [c["error"] for c in chunks if "error" in c]
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.get("choices"))
    return text, errors


def _in_parallel(jobs: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    return results


@pytest.fixture(scope="module")
def loader() -> FaultyLoader:
    return FaultyLoader()


@pytest.fixture(scope="module")
def faulty(make_server, loader) -> LiveServer:
    """A server whose model has a poisoned detokenizer and a breakable forward pass."""
    return make_server(loader=loader)


def test_a_request_failing_to_detokenize_fails_alone(faulty):
    healthy = [_body("Tell me about the weather.", logit_bias=AWAY),
               _body("What is a river?", logit_bias=AWAY, seed=2, temperature=0.8)]
    solo = [_stream_text(faulty, body) for body in healthy]
    poisoned = _body("Write a line.", logit_bias={str(POISON_TOKEN): 100})

    jobs = [lambda b=b: _stream_text(faulty, b) for b in healthy]
    jobs.append(lambda: _stream_text(faulty, poisoned))
    jobs.append(lambda: raw_request(faulty.url, "POST", "/v1/chat/completions", poisoned))
    *together, (_, poisoned_errors), plain = _in_parallel(jobs)

    assert together == solo
    assert all(not errors for _, errors in together)
    assert [e["code"] for e in poisoned_errors] == ["generation_failed"]
    assert "other requests were not affected" in poisoned_errors[0]["message"]
    assert plain.status == 500
    assert plain.json()["error"]["code"] == "generation_failed"
    assert plain.json()["error"]["type"] == "server_error"


def test_a_failed_model_step_ends_its_batch_with_a_clear_error_and_the_server_recovers(
        faulty, loader, chat_tokenizer):
    (breakable,) = loader.models
    from mlxk2.engine.load import stop_token_ids

    endless = {**AWAY, **{str(t): -100 for t in stop_token_ids(chat_tokenizer)}}
    long = _body("Tell me a long story.", max_tokens=1000, logit_bias=endless)
    started = threading.Event()

    def stream_until_broken() -> list[dict[str, Any]]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", faulty.config.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({**long, "stream": True}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        chunks = []
        for line in response:
            if line.startswith(b"data: {"):
                chunks.append(json.loads(line[6:]))
                if len(chunks) == 3:
                    started.set()
        conn.close()
        return chunks

    def break_model() -> None:
        assert started.wait(60)
        breakable.broken.set()

    try:
        first, second, _ = _in_parallel([stream_until_broken, stream_until_broken, break_model])
    finally:
        breakable.broken.clear()
    for chunks in (first, second):
        assert "error" in chunks[-1], chunks[-3:]
        error = chunks[-1]["error"]
        assert error["code"] == "generation_failed"
        assert "every request in this batch was ended" in error["message"]
    after = raw_request(faulty.url, "POST", "/v1/chat/completions", _body("Hello!"))
    assert after.status == 200
    assert after.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_top_k_covering_the_vocabulary_is_no_filter_and_disturbs_no_one(live, chat_tokenizer):
    vocab = len(chat_tokenizer)
    sampled = _body("Hello!", temperature=1.0, seed=8)
    beside = _body("What is a river?")
    alone = _stream_text(live, beside)
    reference = raw_request(live.url, "POST", "/v1/chat/completions", sampled).json()

    for top_k in (vocab, vocab + 1, 10**9):
        wide, other = _in_parallel([
            lambda k=top_k: raw_request(live.url, "POST", "/v1/chat/completions",
                                        {**sampled, "top_k": k}),
            lambda: _stream_text(live, beside),
        ])
        assert wide.status == 200, wide.body
        assert wide.json()["choices"] == reference["choices"]
        assert other == alone
