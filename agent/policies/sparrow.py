"""Sparrow-style batch sampling: probe d random feasible nodes and place on the shortest queue
(the power of d choices). Uses no load information beyond the probes' queue lengths."""

from __future__ import annotations

import random

from agent.messages import Bid
from agent.policies.base import Candidate, shuffled
from agent.tasks import TaskSpec


class Sparrow:
    name = "sparrow"

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]:
        return rng.sample(candidates, min(d, len(candidates)))

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid:
        return min(shuffled(bids, rng), key=lambda b: b.queued)
