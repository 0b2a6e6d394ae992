"""What every placement policy sees and returns.

A policy makes two choices inside the one negotiation protocol: whom to ask for bids
(`choose`, from the gossip view) and which yes-bid wins (`pick`, from the bidders' own fresh
answers). It never sends anything and never touches a ledger, so all policies share the same
guarantees (leases, no over-commit, retries).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.messages import Bid
from agent.tasks import TaskSpec
from gossip.messages import ResourceRecord


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    addr: str
    record: ResourceRecord  # its last gossiped resource record


class Policy(Protocol):
    name: str

    def choose(
        self, spec: TaskSpec, candidates: list[Candidate], d: int, rng: random.Random
    ) -> list[Candidate]: ...

    def pick(self, spec: TaskSpec, bids: list[Bid], rng: random.Random) -> Bid: ...


def covering(horizons: Sequence[int], step: float, seconds: float) -> int:
    """Index of the shortest horizon (in steps of `step` seconds) that covers `seconds`; the
    longest if none does."""
    for i, h in enumerate(horizons):
        if h * step >= seconds:
            return i
    return len(horizons) - 1


def usable_forecast(forecast: Sequence[float], horizons: Sequence[int]) -> bool:
    """A forecast as nodes gossip it: one peak per horizon, fractions 0..1 of the node,
    non-decreasing. Anything else (another length, out of range, decreasing, NaN: an old,
    buggy or lying peer) is treated as no forecast at all."""
    return (
        len(forecast) == len(horizons)
        and all(0.0 <= x <= 1.0 for x in forecast)
        and all(a <= b for a, b in zip(forecast, forecast[1:], strict=False))
    )


def peak(forecast: Sequence[float], seconds: float, step: float,
         horizons: Sequence[int]) -> float:  # fmt: skip
    """The forecast peak background over the next `seconds`: the covering horizon's value."""
    return forecast[covering(horizons, step, seconds)]


def gossiped_headroom(rec: ResourceRecord, spec: TaskSpec, step: float,
                      horizons: Sequence[int]) -> float:  # fmt: skip
    """CPUs a node should have free over the task's run, judged from its gossiped record:
    its forecast peak over the task's expected run if it gossips a usable forecast, else its
    current load."""
    f = rec.forecast
    background = peak(f, spec.expected, step, horizons) if usable_forecast(f, horizons) \
        else rec.load  # fmt: skip
    return rec.cpus * (1.0 - background) - rec.alloc_cpus


def shuffled(items: list, rng: random.Random) -> list:
    out = list(items)
    rng.shuffle(out)
    return out
