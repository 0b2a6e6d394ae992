"""Default policy: ask the nodes whose forecast headroom over the task's run is largest (their
gossiped peak background at the chosen quantile over the horizon covering the task's expected
run), and give the task to the bidder that expects the most free CPU after taking it."""

from __future__ import annotations

import random
from collections.abc import Sequence

from agent.messages import Bid
from agent.policies.base import Candidate, gossiped_headroom, shuffled
from agent.tasks import TaskSpec


class Predictive:
    name = "predictive"

    def __init__(self, forecast_step: float, horizons: Sequence[int]) -> None:
        self.step = forecast_step
        self.horizons = tuple(horizons)

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]:
        pool = shuffled(candidates, rng)  # random order among equals
        pool.sort(key=lambda c: gossiped_headroom(c.record, spec, self.step, self.horizons),
                  reverse=True)
        return pool[:d]

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid:
        return max(shuffled(bids, rng), key=lambda b: b.headroom)
