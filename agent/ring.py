"""Consistent hashing: which nodes hold a task's record.

Each node owns `vnodes` points on a 64-bit ring; a key's preference list is the distinct nodes
met walking clockwise from the key's hash. When a node joins or leaves only the keys next to its
points move, so replica sets stay stable as the cluster changes.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Callable, Iterable


def _hash(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=65_536)
def _points(node: str, vnodes: int) -> tuple[tuple[int, str], ...]:
    return tuple((_hash(f"{node}#{i}"), node) for i in range(vnodes))


@functools.lru_cache(maxsize=16)
def shared_ring(nodes: frozenset[str], vnodes: int = 32) -> HashRing:
    """The ring of a set of nodes, built once per process: the nodes of a simulated cluster
    know the same members, and 5,000 copies of a 160,000-point ring do not fit in memory.
    Rings are immutable, so sharing one is safe."""
    return HashRing(nodes, vnodes)


class HashRing:
    def __init__(self, nodes: Iterable[str], vnodes: int = 32) -> None:
        points = sorted(p for n in set(nodes) for p in _points(n, vnodes))
        self._keys = [h for h, _ in points]
        self._nodes = [n for _, n in points]
        self.size = len(set(self._nodes))

    def preference(self, key: str, n: int,
                   usable: Callable[[str], bool] | None = None) -> list[str]:  # fmt: skip
        """The first `n` distinct nodes for `key` (fewer if the ring has fewer nodes).

        With `usable`, nodes for which it is false are skipped: the same answer as a ring built
        over the usable nodes only (their points are simply not there), without rebuilding one
        whenever a node fails or comes back."""
        out: list[str] = []
        if not self._keys:
            return out
        want = min(n, self.size)
        i = bisect.bisect(self._keys, _hash(key))
        total = len(self._keys)
        skipped: set[str] = set()
        for j in range(total):
            node = self._nodes[(i + j) % total]
            if node in out or node in skipped:
                continue
            if usable is not None and not usable(node):
                skipped.add(node)
                if len(skipped) + len(out) == self.size:
                    break
                continue
            out.append(node)
            if len(out) == want:
                break
        return out


class LiveRing:
    """A ring over every known node, answering for the live ones only."""

    __slots__ = ("ring", "live")

    def __init__(self, ring: HashRing, live: Callable[[str], bool]) -> None:
        self.ring = ring
        self.live = live

    def preference(self, key: str, n: int) -> list[str]:
        return self.ring.preference(key, n, self.live)
