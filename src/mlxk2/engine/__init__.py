"""Local inference with mlx-lm: loading, prompts, sampling, stop handling, demo models.

Submodules import mlx lazily where they can, so importing this package is cheap.
"""
