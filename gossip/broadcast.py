"""Transmit-limited broadcast queue: each update rides on a bounded number of messages.

Like memberlist's TransmitLimitedQueue: updates sent the fewest times go first, a newer
update about the same subject replaces the older one, and an update is dropped after
`limit` transmissions (the limit grows with log N so spreading stays reliable as N grows).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class BroadcastQueue:
    def __init__(self) -> None:
        # index = times transmitted; OrderedDict because plain dicts leave tombstones that make
        # repeated take-from-the-end slow
        self._levels: list[OrderedDict[Hashable, Any]] = [OrderedDict()]
        self._level_of: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._level_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._level_of

    def put(self, key: Hashable, item: Any) -> None:
        """Queue `item`, replacing any queued item with the same key (it is now stale)."""
        old = self._level_of.pop(key, None)
        if old is not None:
            del self._levels[old][key]
        self._levels[0][key] = item
        self._level_of[key] = 0

    def discard(self, key: Hashable) -> None:
        """Forget what is queued about `key` (its subject is gone)."""
        level = self._level_of.pop(key, None)
        if level is not None:
            del self._levels[level][key]

    def take(self, most: int, limit: int) -> list[Any]:
        """Up to `most` items, least transmitted first (newest first within a level)."""
        out: list[Any] = []
        moves: list[tuple[Hashable, Any, int]] = []
        for level, items in enumerate(self._levels):
            if len(out) >= most:
                break
            for key in reversed(items):
                out.append(items[key])
                moves.append((key, items[key], level))
                if len(out) >= most:
                    break
        for key, item, level in moves:
            del self._levels[level][key]
            nxt = level + 1
            if nxt >= limit:
                del self._level_of[key]
                continue
            if nxt == len(self._levels):
                self._levels.append(OrderedDict())
            self._levels[nxt][key] = item
            self._level_of[key] = nxt
        return out
