"""Sampler construction: logit bias folded into the sampler, one call for a whole batch."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlxk2.engine.sampling import SamplingParams, make_logits_processors, make_sampler


def _logprobs(logits: mx.array) -> mx.array:
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def test_greedy_bias_in_the_sampler_matches_mlx_lm_bias_processor_row_by_row():
    from mlx_lm.sample_utils import make_logits_processors as mlx_processors

    mx.random.seed(0)
    logits = mx.random.normal((6, 40)) * 3
    top = mx.argmax(logits, axis=-1).tolist()
    bias = {top[0]: -100.0, top[3]: -100.0, 7: 2.5}
    params = SamplingParams(logit_bias=bias)
    (processor,) = mlx_processors(logit_bias=bias)
    expected = [mx.argmax(_logprobs(processor(None, logits[i:i + 1])), axis=-1).item()
                for i in range(logits.shape[0])]

    got = make_sampler(params)(_logprobs(logits)).tolist()

    assert got == expected
    assert got[0] != top[0] and got[3] != top[3]


def test_bias_is_not_also_applied_as_a_processor():
    params = SamplingParams(logit_bias={1: 5.0}, presence_penalty=0.5)
    assert len(make_logits_processors(params)) == 1  # the penalty only
    assert make_logits_processors(SamplingParams(logit_bias={1: 5.0})) == []


@pytest.mark.parametrize("filters", [{"top_p": 0.5}, {"min_p": 0.5}])
def test_filters_apply_to_the_biased_distribution(filters):
    # Token 0 holds nearly all the mass until the bias removes it; then token 1
    # holds about 95%, so a 0.5 top-p or min-p filter keeps only token 1.
    logits = mx.array([[10.0, 5.0] + [0.0] * 8] * 4)
    params = SamplingParams(temperature=1.0, logit_bias={0: -100.0}, **filters)
    sampler = make_sampler(params)
    mx.random.seed(3)
    draws = {t for _ in range(25) for t in sampler(_logprobs(logits)).tolist()}
    assert draws == {1}


def test_unbiased_sampling_is_mlx_lm_own_sampler():
    from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

    logprobs = _logprobs(mx.array([[0.0, 3.0, 1.0]]))
    assert make_sampler(SamplingParams())(logprobs).tolist() == [1]
    assert type(make_sampler(SamplingParams())) is type(mlx_make_sampler(temp=0.0))


@pytest.mark.parametrize("filters", [{}, {"top_p": 0.9, "min_p": 0.02, "top_k": 20}])
def test_a_seeded_sampler_draws_as_a_global_seed_would_whatever_else_draws(filters):
    from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

    logprobs = _logprobs(mx.random.normal((3, 50), key=mx.random.key(1)))
    mx.random.seed(21)
    plain = mlx_make_sampler(temp=0.8, **filters)
    expected = [plain(logprobs).tolist() for _ in range(5)]

    seeded = make_sampler(SamplingParams(temperature=0.8, seed=21, **filters))
    got = []
    for _ in range(5):
        got.append(seeded(logprobs).tolist())
        mx.random.uniform(shape=(4,))  # another request's draw in between
    assert got == expected
    assert len({tuple(row) for row in expected}) > 1  # the draws do vary
