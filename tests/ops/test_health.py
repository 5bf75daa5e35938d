"""health: healthy/unhealthy lists with a summary, for all models or one pattern."""

from __future__ import annotations

from tests.fixtures.cache import BuiltCache
from tests.fixtures.cache_cases import CASES, UNHEALTHY
from tests.fixtures.cli import run_inprocess


def test_health_of_all_models(cache_env: BuiltCache) -> None:
    result = run_inprocess("health", "--json")
    assert result.code == 0
    data = result.json["data"]
    summary = data["summary"]
    assert summary["total"] == len(CASES)
    assert summary["healthy_count"] == len(data["healthy"])
    assert summary["unhealthy_count"] == len(data["unhealthy"])
    assert all(e["reason"] == "Model is healthy" for e in data["healthy"])
    unhealthy = {e["name"]: e["reason"] for e in data["unhealthy"]}
    for key in UNHEALTHY:
        if CASES[key].root_readable:
            continue
        assert CASES[key].repo_id in unhealthy, key
        assert CASES[key].reason in unhealthy[CASES[key].repo_id]


def test_health_of_one_model_by_pattern(cache_env: BuiltCache) -> None:
    data = run_inprocess("health", "config-missing", "--json").json["data"]
    assert data["summary"] == {"total": 1, "healthy_count": 0, "unhealthy_count": 1}
    assert data["unhealthy"][0]["reason"] == "config.json missing"


def test_truncated_safetensors_is_unhealthy(cache_env: BuiltCache) -> None:
    key = next(k for k, c in CASES.items() if "runcated" in (c.reason or ""))
    data = run_inprocess("health", CASES[key].repo_id, "--json").json["data"]
    assert data["unhealthy"][0]["status"] == "unhealthy"


def test_ambiguous_pattern_is_an_error(cache_env: BuiltCache) -> None:
    result = run_inprocess("health", "tiny", "--json")
    assert result.code == 1
    assert result.json["error"]["type"] == "ambiguous_match"
    assert len(result.json["error"]["matches"]) > 1


def test_human_health_names_problems(cache_env: BuiltCache) -> None:
    result = run_inprocess("health")
    assert result.code == 0
    assert "FAIL broken/config-missing: config.json missing" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("unhealthy")
