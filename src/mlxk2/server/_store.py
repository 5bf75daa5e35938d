"""Stored Responses API answers: a bounded in-memory LRU, read by ``previous_response_id``."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredResponse:
    """One answer as ``GET`` returns it, and the conversation it ends.

    ``history`` is the chat-shaped conversation up to and including this answer
    (without its ``instructions``, which the API does not carry over), so a
    follow-up request continues it and its prompt begins the same way, which
    the prompt cache reuses.
    """

    body: dict[str, Any]
    history: tuple[dict[str, Any], ...]


class ResponseStore:
    """At most ``capacity`` responses; the least recently used one goes first.

    It is only touched from the event loop, so it needs no lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, ident: str, item: StoredResponse) -> None:
        if self.capacity <= 0:
            return
        self._items[ident] = item
        self._items.move_to_end(ident)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, ident: str) -> StoredResponse | None:
        item = self._items.get(ident)
        if item is not None:
            self._items.move_to_end(ident)
        return item

    def delete(self, ident: str) -> bool:
        return self._items.pop(ident, None) is not None

    def __len__(self) -> int:
        return len(self._items)
