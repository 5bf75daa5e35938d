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


def test_a_pattern_checks_every_model_it_matches_as_list_filters(cache_env: BuiltCache) -> None:
    result = run_inprocess("health", "tiny", "--json")
    assert result.code == 0
    data = result.json["data"]
    checked = {e["name"] for e in data["healthy"] + data["unhealthy"]}
    listed = {m["name"] for m in run_inprocess("list", "tiny", "--json").json["data"]["models"]}
    assert len(checked) > 1
    assert checked == listed
    assert data["summary"]["total"] == len(listed)


def test_a_pattern_matching_no_cached_name_is_model_not_found(cache_env: BuiltCache) -> None:
    result = run_inprocess("health", "no-such-model-anywhere", "--json")
    assert (result.code, result.json["error"]["type"]) == (1, "model_not_found")


def test_strict_exits_1_when_any_checked_model_is_unhealthy(cache_env: BuiltCache) -> None:
    everything = run_inprocess("health", "--strict", "--json")
    assert everything.code == 1
    assert everything.json["status"] == "success"
    assert everything.json["data"]["summary"]["unhealthy_count"] > 0
    assert run_inprocess("health", "--strict").code == 1
    assert run_inprocess("health", "config-missing", "--strict").code == 1


def test_strict_exits_0_when_every_checked_model_is_healthy(cache_env: BuiltCache) -> None:
    result = run_inprocess("health", "tiny", "--strict", "--json")
    assert result.json["data"]["summary"]["unhealthy_count"] == 0
    assert result.code == 0


def test_without_strict_unhealthy_models_still_exit_0(cache_env: BuiltCache) -> None:
    assert run_inprocess("health", "config-missing").code == 0


def test_human_health_names_problems(cache_env: BuiltCache) -> None:
    result = run_inprocess("health")
    assert result.code == 0
    assert "FAIL broken/config-missing: config.json missing" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("unhealthy")
