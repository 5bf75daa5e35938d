"""The local model store: cache layout, inspection, integrity and runtime checks.

Nothing in this package imports mlx, mlx_lm, transformers or fastapi.
"""
