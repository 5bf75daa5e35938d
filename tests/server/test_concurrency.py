"""Continuous batching, admission control and disconnects against a live server."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest

from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, connection, raw_request

PROMPTS = [
    "Tell me about the weather.",
    "What is a river?",
    "Describe a small town in winter.",
    "Hello!",
    "Why do birds sing in the morning, and what do they say to each other?",
    "List three colours.",
    "Write a line about the sea.",
    "How are you today?",
]


def _stream_chat(live: LiveServer, prompt: str, max_tokens: int, stop: list[str] | None,
                 bias: dict[str, int] | None = None, delay: float = 0.0) -> dict[str, Any]:
    time.sleep(delay)
    stream = live.client().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, seed=11, stop=stop, stream=True, stream_options={"include_usage": True},
        logit_bias=bias,
    )
    text, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    return {"text": "".join(text), "finish": finish, "usage": usage}


def test_eight_parallel_streams_equal_their_solo_runs(live, chat_tokenizer):
    rng = random.Random(5)
    # Some requests share a logit bias (one sampler for their rows), one has its own.
    eos = str(chat_tokenizer.convert_tokens_to_ids("<|im_end|>"))
    biases = {1: {eos: -100}, 5: {eos: -100}, 6: {"40": 8}}
    jobs = [(p, 16 + 4 * i, [" the"] if i % 3 == 0 else None, biases.get(i))
            for i, p in enumerate(PROMPTS)]
    solo = [_stream_chat(live, *job) for job in jobs]
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            results[index] = _stream_chat(live, *jobs[index], delay=delays[index])
        except BaseException as exc:
            errors.append(exc)

    delays = [rng.random() * 0.2 for _ in jobs]
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert results == solo
    assert chat_tokenizer.decode([40]) * 4 in solo[6]["text"]  # pushed up by its bias
    for result, (_, max_tokens, _, _) in zip(results, jobs, strict=True):
        assert result is not None and result["finish"] in ("stop", "length")
        if result["finish"] == "length":
            assert result["usage"][1] == max_tokens


def test_seeded_sampling_is_reproducible_while_other_requests_sample(live):
    def ask(prompt: str, seed: int | None) -> str:
        response = live.client().chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": prompt}], max_tokens=24,
            temperature=1.0, seed=seed)
        return response.choices[0].message.content

    seeded = [(PROMPTS[i], 100 + i) for i in range(3)]
    solo = [ask(*job) for job in seeded]
    results: dict[int, str] = {}
    jobs = [(i, *job) for i, job in enumerate(seeded)]
    jobs += [(10 + i, PROMPTS[3 + i], None) for i in range(4)]  # unseeded draws in between
    threads = [threading.Thread(target=lambda j=j: results.__setitem__(j[0], ask(*j[1:])))
               for j in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [results.get(i) for i in range(3)] == solo
    assert len(set(solo)) == 3


@pytest.fixture(scope="module")
def one_slot(make_server) -> LiveServer:
    """A server that decodes one request at a time and queues none."""
    return make_server(max_concurrency=1, max_queue=0)


def _open_stream(live: LiveServer, max_tokens: int = 4000) -> Any:
    """Start a long stream and read its first event, so it surely holds its slot."""
    conn = connection(live.url)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Go on forever."}],
            "max_tokens": max_tokens, "stream": True}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    return conn, response


def _wait_for(predicate: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def _active(live: LiveServer) -> int:
    models = raw_request(live.url, "GET", "/health").json()["models"]
    return sum(m["active_requests"] for m in models)


def test_full_queue_answers_503(one_slot):
    conn, _ = _open_stream(one_slot)
    try:
        response = raw_request(one_slot.url, "POST", "/v1/chat/completions",
                               body={"model": CHAT, "messages": [{"role": "user",
                                                                  "content": "hi"}],
                                     "max_tokens": 2})
        assert response.status == 503
        assert response.json()["error"]["code"] == "queue_full"
    finally:
        conn.close()


def _disconnects(live: LiveServer) -> float:
    for line in raw_request(live.url, "GET", "/metrics").body.decode().splitlines():
        if line.startswith("mlxk2_client_disconnects_total "):
            return float(line.split()[1])
    raise AssertionError("no disconnect counter")


def test_disconnect_frees_the_slot_and_the_server_carries_on(one_slot):
    _wait_for(lambda: _active(one_slot) == 0)
    before = _disconnects(one_slot)
    conn, response = _open_stream(one_slot)
    response.read(200)
    conn.sock.close()
    conn.close()
    _wait_for(lambda: _active(one_slot) == 0)
    reply = one_slot.client().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3
    assert _disconnects(one_slot) == before + 1


def test_shutdown_ends_streams_with_an_error_event_and_refuses_new_work(make_server):
    draining = make_server()
    conn, response = _open_stream(draining)
    try:
        draining.app.state.mlxk.begin_shutdown()
        rest = response.read().decode()
    finally:
        conn.close()
    events = [block[len("data: "):] for block in rest.split("\n\n") if block.strip()]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "shutting_down"
    refused = raw_request(draining.url, "POST", "/v1/chat/completions",
                          body={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status == 503


def test_disconnect_of_a_non_streaming_request_frees_the_slot(one_slot):
    _wait_for(lambda: _active(one_slot) == 0)
    before = _disconnects(one_slot)
    conn = connection(one_slot.url)
    body = {"model": CHAT, "messages": [{"role": "user", "content": "Go on."}],
            "max_tokens": 4000}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    _wait_for(lambda: _active(one_slot) == 1)
    conn.sock.close()
    conn.close()
    _wait_for(lambda: _active(one_slot) == 0)
    assert _disconnects(one_slot) == before + 1
    reply = one_slot.client().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.usage.completion_tokens == 2
