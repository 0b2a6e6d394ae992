"""Baseline: ask the nodes with the lowest current (gossiped) load; the least loaded bidder wins.
No forecast: this is what a scheduler that only sees utilisation does."""

from __future__ import annotations

import random

from agent.messages import Bid
from agent.policies.base import Candidate, shuffled
from agent.tasks import TaskSpec


class LeastLoaded:
    name = "least-loaded"

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]:
        pool = shuffled(candidates, rng)
        pool.sort(key=lambda c: c.record.load)
        return pool[:d]

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid:
        return min(shuffled(bids, rng), key=lambda b: b.load)
