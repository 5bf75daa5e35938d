"""Shared forward passes for ``/v1/embeddings``: concurrent requests ride together.

Requests hand their token-id inputs to the model's batcher on the event loop
(so no locks); while a forward pass runs on the MLX thread, new inputs queue,
and the next pass takes as many as fit the token budget, oldest first. Only
the worker's public ``call`` is used to reach the MLX thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxk2.engine.embed import DEFAULT_TOKEN_BUDGET, Encoder

RunOnWorker = Callable[..., "concurrent.futures.Future[Any]"]


@dataclass
class _Item:
    ids: tuple[int, ...]
    future: asyncio.Future[np.ndarray]


class EmbeddingBatcher:
    """One loaded encoder and the inputs waiting for it.

    Args:
        encoder: The loaded model (``.loaded``, as a generation batch has).
        run: The worker's ``call``: runs a function on the MLX thread, returns a future.
        token_budget: Most padded tokens (inputs × longest) in one forward pass.
        max_batch: Most inputs in one forward pass.
    """

    def __init__(self, encoder: Encoder, run: RunOnWorker, *,
                 token_budget: int = DEFAULT_TOKEN_BUDGET, max_batch: int = 256) -> None:
        self.loaded = encoder
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.passes = 0
        self._run = run
        self._pending: deque[_Item] = deque()
        self._drainer: asyncio.Task[None] | None = None

    async def embed(self, inputs: Sequence[Sequence[int]]) -> np.ndarray:
        """The vectors for ``inputs``, in order, shape ``(len(inputs), dimensions)``."""
        loop = asyncio.get_running_loop()
        items = [_Item(tuple(ids), loop.create_future()) for ids in inputs]
        self._pending.extend(items)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        try:
            return np.stack([await item.future for item in items])
        finally:
            for item in items:  # a client that went away frees its queued inputs
                item.future.cancel()

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        longest = 0
        while self._pending:
            item = self._pending[0]
            if item.future.done():
                self._pending.popleft()
                continue
            width = max(longest, len(item.ids))
            if batch and (len(batch) == self.max_batch
                          or (len(batch) + 1) * width > self.token_budget):
                break
            batch.append(self._pending.popleft())
            longest = width
        return batch

    async def _drain(self) -> None:
        while batch := self._take():
            try:
                vectors = await asyncio.wrap_future(
                    self._run(self.loaded.forward, [item.ids for item in batch]))
            except Exception as exc:  # handed to every waiting request, which reports it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.passes += 1
            for item, vector in zip(batch, vectors, strict=True):
                if not item.future.done():
                    item.future.set_result(vector)

    def close(self) -> None:
        """Drop the encoder (the worker calls this on the MLX thread when unloading)."""
        del self.loaded
