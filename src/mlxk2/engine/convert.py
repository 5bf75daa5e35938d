"""mlx-lm's side of ``convert``: load lazily, quantise or cast, and save.

:mod:`mlxk2.ops.convert` plans, stages and verifies; everything that touches mlx
or mlx-lm is here, imported inside the functions so planning stays cheap.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from mlxk2.errors import ModelIncompatibleError

Model = Any
Config = dict[str, Any]


def load_lazy(source_dir: Path, shown: str) -> tuple[Model, Config]:
    """mlx-lm's loader with lazy weights, which are read only as they are converted.

    Raises:
        ModelIncompatibleError: mlx-lm cannot build the model from ``source_dir``.
    """
    from mlx_lm.utils import load_model

    try:
        model, config = load_model(source_dir, lazy=True)
    except (ValueError, FileNotFoundError) as exc:
        raise ModelIncompatibleError(f"mlx-lm cannot load {shown}: {exc}") from exc
    return model, config


def quantize(model: Model, config: Config, group_size: int, bits: int) -> tuple[Model, Config]:
    """Affine quantisation of every quantisable layer, as ``mlx_lm.convert -q`` does."""
    from mlx_lm.utils import quantize_model

    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints a bits-per-weight line
        model, config = quantize_model(model, config, group_size, bits)
    return model, config


def cast(model: Model, config: Config, dtype: str) -> Config:
    """Cast floating-point parameters to ``dtype`` in place; returns the updated config."""
    import mlx.core as mx
    from mlx.utils import tree_map_with_path

    target = getattr(mx, dtype)
    castable = getattr(model, "cast_predicate", lambda _: True)

    def cast_one(path: str, value: Any) -> Any:
        # Packed quantised weights are integers and stay as they are.
        if castable(path) and mx.issubdtype(value.dtype, mx.floating):
            return value.astype(target)
        return value

    model.update(tree_map_with_path(cast_one, model.parameters()))
    return {**config, "torch_dtype": dtype}


def save(model: Model, config: Config, dest: Path) -> None:
    """Weights (sharded with an index as mlx-lm writes them) and ``config.json``."""
    from mlx_lm.utils import save_config, save_model

    save_model(dest, model, donate_model=True)
    keep_vision = "vision_tower" in getattr(model, "model", {})
    save_config(config, dest / "config.json", keep_vision_config=keep_vision)
