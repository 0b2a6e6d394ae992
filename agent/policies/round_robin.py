"""Baseline: walk the feasible nodes in a fixed order, continuing where the last task stopped.
Each agent keeps its own cursor (there is no shared state), so the order is per asker."""

from __future__ import annotations

import random

from agent.messages import Bid
from agent.policies.base import Candidate
from agent.tasks import TaskSpec


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._last = ""  # node id the previous task went to

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]:
        order = sorted(candidates, key=lambda c: c.node)
        start = next((i for i, c in enumerate(order) if c.node > self._last), 0)
        picked = (order[start:] + order[:start])[:d]
        if picked:
            self._last = picked[0].node
        return picked

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid:
        return bids[0]  # bids arrive in the order the candidates were chosen
