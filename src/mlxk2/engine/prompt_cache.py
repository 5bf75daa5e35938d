"""Reusing earlier requests' KV caches for prompts that begin the same way.

A chat client resends the whole conversation every turn. With the cache of the
previous turn, only the new messages are prefilled, so time to first token stays
flat as a conversation grows instead of rising with its length.
"""

from __future__ import annotations

from typing import Any

#: Upper bound on the memory the caches of one loaded model hold...
MAX_BYTES = 1 << 30
#: ...and at most this share of the machine's memory, for small machines.
MAX_SHARE_OF_MEMORY = 1 / 16

# mlx-lm's cache is keyed by model as well; each loaded model has its own instance.
_MODEL_KEY = "model"


def default_max_bytes() -> int:
    """:data:`MAX_BYTES`, or :data:`MAX_SHARE_OF_MEMORY` of the machine's memory if less."""
    from mlxk2.system import memory_total_bytes

    total = memory_total_bytes()
    return MAX_BYTES if total is None else min(MAX_BYTES, int(total * MAX_SHARE_OF_MEMORY))


class PromptCache:
    """Longest-prefix lookup over finished requests' caches (mlx-lm's LRUPromptCache).

    Only the MLX worker thread uses it.
    """

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        """Keep up to ``max_entries`` caches, least recently used dropped first; 0 keeps none."""
        from mlx_lm.models.cache import LRUPromptCache

        self.enabled = max_entries > 0
        self._lru = LRUPromptCache(max_size=max_entries,
                                   max_bytes=default_max_bytes() if max_bytes is None
                                   else max_bytes)

    def __len__(self) -> int:
        return len(self._lru)

    def lookup(self, prompt: list[int]) -> tuple[list[Any] | None, int]:
        """A private copy of the cache for the longest cached prefix of ``prompt``.

        Returns:
            The cache (None when nothing matches) and how many leading prompt
            tokens it covers. At least one token is always left to prefill,
            since the next token's logits come from the last prompt token.
        """
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if not self.enabled:
            return None, 0
        cache, rest = self._lru.fetch_nearest_cache(_MODEL_KEY, prompt)
        if cache is None:
            return None, 0
        if not rest:  # the whole prompt is cached: give back its last token
            if len(prompt) < 2 or not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, 1)
            return cache, len(prompt) - 1
        return cache, len(prompt) - len(rest)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep a finished request's cache; ``tokens`` are exactly those it holds."""
        import mlx.core as mx

        if not self.enabled:
            return
        # Evaluated now, the row owns its arrays instead of pinning the whole
        # batch's cache through a lazy slice.
        mx.eval([c.state for c in cache])
        self._lru.insert_cache(_MODEL_KEY, list(tokens), cache)
