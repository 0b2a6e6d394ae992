"""Baseline: any feasible node, chosen at random (among d random ones that have room)."""

from __future__ import annotations

import random

from agent.messages import Bid
from agent.policies.base import Candidate
from agent.tasks import TaskSpec


class RandomChoice:
    name = "random"

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]:
        return rng.sample(candidates, min(d, len(candidates)))

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid:
        return rng.choice(bids)
