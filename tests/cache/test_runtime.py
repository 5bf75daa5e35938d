"""Runtime compatibility: mlx-lm's own mapping rules, read from disk without importing it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxk2.cache.runtime import find_mlx_lm, runtime_reason

MLX_LM_VERSION = importlib.metadata.version("mlx-lm")


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama"},
        {"model_type": "mistral"},  # MODEL_REMAPPING: mistral -> llama
        {"model_type": "llava"},  # MODEL_REMAPPING: llava -> mistral3
        {"model_type": "lfm2-vl"},  # a module name with a hyphen
        {"model_type": "bailing_hybrid", "architectures": ["BailingMoeV3ForCausalLM"]},
        {"model_type": "qwen2", "architectures": "Qwen2ForCausalLM"},
    ],
    ids=lambda c: c["model_type"],
)
def test_installed_mlx_lm_runs_supported_architectures(config: dict) -> None:
    assert runtime_reason(config, "MLX") is None


def test_unsupported_architecture_names_it_and_the_installed_version() -> None:
    reason = runtime_reason({"model_type": "bert"}, "MLX")

    assert reason == f"Model architecture 'bert' is not supported by mlx-lm {MLX_LM_VERSION}"


@pytest.mark.parametrize("model_type", ["../utils", "models.llama", "base", "rope_utils", ""])
def test_helper_modules_and_path_tricks_are_not_architectures(model_type: str) -> None:
    reason = runtime_reason({"model_type": model_type}, "MLX")

    assert reason is not None


@pytest.mark.parametrize("framework", ["GGUF", "PyTorch", "Unknown"])
def test_non_mlx_frameworks_get_the_spec_reason(framework: str) -> None:
    reason = runtime_reason({"model_type": "llama"}, framework)

    assert reason is not None
    assert reason.startswith(f"Framework {framework} not executable with mlx-lm (requires MLX)")


def test_a_gguf_model_reason_suggests_the_import_command() -> None:
    reason = runtime_reason({}, "GGUF")

    assert reason is not None and "mlxk2 import" in reason


def test_a_config_without_model_type_cannot_pick_an_architecture() -> None:
    reason = runtime_reason({"architectures": ["LlamaForCausalLM"]}, "MLX")

    assert reason is not None and "model_type" in reason


@pytest.mark.skipif(importlib.util.find_spec("hf_olmo") is not None, reason="hf_olmo installed")
def test_a_module_that_exits_without_its_optional_package_is_not_runnable() -> None:
    reason = runtime_reason({"model_type": "olmo"}, "MLX")

    assert reason == (
        f"Model architecture 'olmo' needs the package 'hf_olmo' (not installed) "
        f"to run with mlx-lm {MLX_LM_VERSION}"
    )


def test_checking_does_not_import_mlx_or_mlx_lm() -> None:
    code = textwrap.dedent(
        """
        import sys
        from mlxk2.cache.runtime import runtime_reason
        assert runtime_reason({"model_type": "mistral"}, "MLX") is None
        assert runtime_reason({"model_type": "bert"}, "MLX") is not None
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"mlx", "mlx_lm"})
        print(loaded)
        """
    )
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"


@pytest.fixture
def fake_mlx_lm(tmp_path: Path) -> list[str]:
    """A stand-in mlx-lm 9.9.9 with its own remapping tables and model modules."""
    package = tmp_path / "mlx_lm"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "utils.py").write_text(
        textwrap.dedent(
            """
            import mlx.core as mx
            MODEL_REMAPPING = {"alias": "real", "ghost": "gone"}
            MODEL_ARCHITECTURE_REMAPPING = {("hybrid", "HybridForCausalLM"): "special"}
            """
        )
    )
    model = "class ModelArgs:\n    pass\n\nclass Model:\n    pass\n"
    (package / "models" / "real.py").write_text(model)
    (package / "models" / "special.py").write_text(model)
    (package / "models" / "hybrid.py").write_text(model)
    (package / "models" / "helpers.py").write_text("def helper():\n    pass\n")
    (package / "models" / "needy.py").write_text(
        "import sys\ntry:\n    import no_such_pkg_mlxk2\nexcept ImportError:\n"
        "    sys.exit(1)\n\n" + model
    )
    (package / "models" / "optional.py").write_text(
        "try:\n    import no_such_pkg_mlxk2\nexcept ImportError:\n"
        "    no_such_pkg_mlxk2 = None\n\n" + model
    )
    dist = tmp_path / "mlx_lm-9.9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlx-lm\nVersion: 9.9.9\n")
    return [str(tmp_path)]


def test_fake_package_is_read_not_imported(fake_mlx_lm: list[str]) -> None:
    mlx_lm = find_mlx_lm(fake_mlx_lm)

    assert mlx_lm is not None and mlx_lm.version == "9.9.9"
    assert dict(mlx_lm.model_remapping) == {"alias": "real", "ghost": "gone"}
    assert dict(mlx_lm.architecture_remapping) == {("hybrid", "HybridForCausalLM"): "special"}


@pytest.mark.parametrize(
    ("config", "module"),
    [
        ({"model_type": "alias"}, "real"),
        ({"model_type": "real"}, "real"),
        ({"model_type": "hybrid", "architectures": ["HybridForCausalLM"]}, "special"),
        ({"model_type": "hybrid", "architectures": ["Other"]}, "hybrid"),
        ({"model_type": "alias", "architectures": ["HybridForCausalLM"]}, "real"),
    ],
)
def test_mapping_follows_mlx_lm_order(fake_mlx_lm: list[str], config: dict, module: str) -> None:
    mlx_lm = find_mlx_lm(fake_mlx_lm)

    assert mlx_lm is not None and mlx_lm.module_for(config) == module
    assert runtime_reason(config, "MLX", search_path=fake_mlx_lm) is None


def test_a_remapped_name_without_its_module_names_both(fake_mlx_lm: list[str]) -> None:
    reason = runtime_reason({"model_type": "ghost"}, "MLX", search_path=fake_mlx_lm)

    assert (
        reason == "Model architecture 'ghost' (mapped to 'gone') is not supported by mlx-lm 9.9.9"
    )


def test_only_modules_defining_model_count(fake_mlx_lm: list[str]) -> None:
    reason = runtime_reason({"model_type": "helpers"}, "MLX", search_path=fake_mlx_lm)

    assert reason == "Model architecture 'helpers' is not supported by mlx-lm 9.9.9"


def test_hard_and_soft_optional_imports_differ(fake_mlx_lm: list[str]) -> None:
    needy = runtime_reason({"model_type": "needy"}, "MLX", search_path=fake_mlx_lm)
    optional = runtime_reason({"model_type": "optional"}, "MLX", search_path=fake_mlx_lm)

    assert needy is not None and "'no_such_pkg_mlxk2'" in needy
    assert optional is None


def test_missing_mlx_lm_is_the_reason(tmp_path: Path) -> None:
    reason = runtime_reason({"model_type": "llama"}, "MLX", search_path=[str(tmp_path)])

    assert reason is not None and "mlx-lm is not installed" in reason


def test_unparseable_utils_means_no_remapping(fake_mlx_lm: list[str]) -> None:
    utils = Path(fake_mlx_lm[0]) / "mlx_lm" / "utils.py"
    utils.write_text("MODEL_REMAPPING = {\n")

    assert runtime_reason({"model_type": "real"}, "MLX", search_path=fake_mlx_lm) is None
    reason = runtime_reason({"model_type": "alias"}, "MLX", search_path=fake_mlx_lm)
    assert reason is not None and "'alias'" in reason
