"""What every placement policy sees and returns.

A policy makes two choices inside the one negotiation protocol: whom to ask for bids
(`choose`, from the gossip view) and which yes-bid wins (`pick`, from the bidders' own fresh
answers). It never sends anything and never touches a ledger, so all policies share the same
guarantees (leases, no over-commit, retries).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from gossip.messages import Bid, ResourceRecord, TaskSpec


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


def peak(forecast: tuple[float, ...] | list[float], seconds: float, step: float) -> float:
    """Highest forecast value over the steps that cover `seconds` (at least one step)."""
    if not forecast:
        return 0.0
    n = max(1, min(len(forecast), math.ceil(seconds / step) if step > 0 else 1))
    return max(forecast[:n])


def gossiped_headroom(rec: ResourceRecord, spec: TaskSpec, step: float) -> float:
    """CPUs a node should have free over the task's run, judged from its gossiped record."""
    background = peak(rec.forecast, spec.expected, step) if rec.forecast else rec.load
    return rec.cpus * (1.0 - background) - rec.alloc_cpus


def shuffled(items: list, rng: random.Random) -> list:
    out = list(items)
    rng.shuffle(out)
    return out
