"""Prompt caching: a later prompt that begins like an earlier one skips that part of prefill."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import pytest

from mlxk2.engine.prompt_cache import PromptCache
from tests.fixtures.models import CHAT
from tests.fixtures.server import LiveServer, raw_request

FIRST_TURN = [{"role": "user", "content": "Tell me about the weather in a small town."}]


def _kv_cache(length: int) -> list[Any]:
    from mlx_lm.models.cache import KVCache

    cache = KVCache()
    cache.update_and_fetch(mx.ones((1, 2, length, 4)), mx.ones((1, 2, length, 4)))
    return [cache]


def test_lookup_finds_the_longest_cached_prefix_and_leaves_a_token_to_prefill():
    cache = PromptCache(4)
    tokens = list(range(10, 20))
    cache.store(tokens, _kv_cache(len(tokens)))

    longer, covered = cache.lookup([*tokens, 7, 8])
    assert covered == 10 and longer is not None and longer[0].offset == 10

    same, covered = cache.lookup(tokens)
    assert covered == 9 and same is not None and same[0].offset == 9

    branch, covered = cache.lookup([*tokens[:6], 99, 98])
    assert covered == 6 and branch is not None and branch[0].offset == 6

    assert cache.lookup([1, 2, 3]) == (None, 0)


def test_a_disabled_cache_keeps_nothing():
    cache = PromptCache(0)
    cache.store([1, 2, 3], _kv_cache(3))
    assert len(cache) == 0
    assert cache.lookup([1, 2, 3, 4]) == (None, 0)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.fixture(scope="module")
def uncached(make_server) -> LiveServer:
    return make_server(prompt_cache=0)


def _chat(live: LiveServer, messages: list[dict[str, str]]) -> Any:
    return live.client().chat.completions.create(
        model=CHAT, messages=messages, max_tokens=24, temperature=0)


def test_next_chat_turn_reuses_the_previous_turn_and_answers_the_same(
        live, uncached, chat_tokenizer):
    first = _chat(live, FIRST_TURN)
    reply = first.choices[0].message.content
    assert reply == _chat(uncached, FIRST_TURN).choices[0].message.content
    second_turn = [*FIRST_TURN, {"role": "assistant", "content": reply},
                   {"role": "user", "content": "And in winter?"}]

    warm = _chat(live, second_turn)
    cold = _chat(uncached, second_turn)

    one = chat_tokenizer.apply_chat_template(FIRST_TURN, add_generation_prompt=True)
    two = chat_tokenizer.apply_chat_template(second_turn, add_generation_prompt=True)
    shared = _common_prefix(one, two)
    assert warm.usage.prompt_tokens == cold.usage.prompt_tokens == len(two)
    assert shared <= warm.usage.prompt_tokens_details.cached_tokens < len(two)
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert warm.choices[0].message.content == cold.choices[0].message.content
    assert warm.usage.completion_tokens == cold.usage.completion_tokens


def test_cached_prompt_tokens_are_counted_in_metrics(live):
    _chat(live, FIRST_TURN)
    again = _chat(live, FIRST_TURN)  # the whole prompt is cached now, bar its last token
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    metrics = raw_request(live.url, "GET", "/metrics").body.decode()
    line = next(row for row in metrics.splitlines()
                if row.startswith("mlxk2_prompt_tokens_cached_total "))
    assert float(line.split()[1]) > 0


def test_the_byte_cap_evicts_the_least_recently_used_cache():
    entry_bytes = _kv_cache(8)[0].nbytes
    cache = PromptCache(16, max_bytes=2 * entry_bytes)
    for start in (100, 200, 300):
        cache.store(list(range(start, start + 8)), _kv_cache(8))
    assert len(cache) == 2
    assert cache.lookup([*range(100, 108), 1]) == (None, 0)
    assert cache.lookup([*range(300, 308), 1])[1] == 8


def test_the_default_byte_cap_is_small_on_small_machines(monkeypatch):
    from mlxk2.engine import prompt_cache

    monkeypatch.setattr("mlxk2.system.memory_total_bytes", lambda: 8 << 30)
    assert prompt_cache.default_max_bytes() == 512 << 20
    monkeypatch.setattr("mlxk2.system.memory_total_bytes", lambda: 64 << 30)
    assert prompt_cache.default_max_bytes() == prompt_cache.MAX_BYTES
