"""A scenario's [[faults]] resolved, for one seed, into a timeline of concrete events; and, from
the events actually applied, which node was disturbed when (to tell false failure declarations
from true ones).

Resolution is deterministic in (scenario, seed): a `fraction` picks nodes with
``random.Random(f"{seed}:faults:{index}")``; a crash with ``restart`` schedules restarts of a
seeded part of the crashed nodes after a seeded delay; a fault with a ``duration`` schedules its
own undoing (resume, heal, loss 0, delay 0). Both runners (sim and local) play the same
timeline, so a scenario means the same faults in both modes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from scenarios.spec import Fault, Scenario


@dataclass(frozen=True, order=True)
class FaultEvent:
    t: float
    order: int  # ties at one instant keep the file's order
    action: str  # crash | restart | pause | resume | partition | heal | loss | delay
    nodes: tuple[int, ...] = ()  # targets (loss/delay: empty = every node)
    groups: tuple[tuple[int, ...], ...] = ()  # partition
    value: float = 0.0  # loss rate or added delay in seconds

    def describe(self, name: callable = lambda i: f"n{i}") -> str:  # type: ignore[valid-type]
        if self.action == "partition":
            return " | ".join(",".join(name(i) for i in g) for g in self.groups)
        targets = ",".join(name(i) for i in self.nodes) if self.nodes else "all nodes"
        if self.action == "loss":
            return f"{targets} rate {self.value:g}"
        if self.action == "delay":
            return f"{targets} +{1000 * self.value:g} ms"
        return "" if self.action == "heal" else targets


def _targets(f: Fault, n: int, rng: random.Random) -> tuple[int, ...]:
    if f.nodes:
        return f.nodes
    if f.fraction:
        k = max(1, round(f.fraction * n))
        return tuple(sorted(rng.sample(range(n), min(k, n))))
    return ()


def resolve(sc: Scenario, seed: int) -> list[FaultEvent]:
    """Every fault event of the scenario for this seed, in time order."""
    n = sc.cluster.nodes
    out: list[FaultEvent] = []
    order = 0

    def add(t: float, action: str, **kw: object) -> None:
        nonlocal order
        out.append(FaultEvent(t, order, action, **kw))  # type: ignore[arg-type]
        order += 1

    for f in sc.faults:
        rng = random.Random(f"{seed}:faults:{f.index}")
        targets = _targets(f, n, rng)
        end = f.at + f.duration if f.duration else None
        if f.action == "crash":
            add(f.at, "crash", nodes=targets)
            if f.restart:
                k = math.floor(f.restart * len(targets) + 0.5)  # half up: 0.5 of 1 node is 1
                lo, hi = f.restart_after
                for i in sorted(rng.sample(list(targets), k)):
                    add(f.at + rng.uniform(lo, hi), "restart", nodes=(i,))
        elif f.action in ("restart", "resume"):
            add(f.at, f.action, nodes=targets)
        elif f.action == "pause":
            add(f.at, "pause", nodes=targets)
            if end is not None:
                add(end, "resume", nodes=targets)
        elif f.action == "partition":
            groups = f.groups or (targets, tuple(i for i in range(n) if i not in targets))
            add(f.at, "partition", groups=tuple(g for g in groups if g))
            if end is not None:
                add(end, "heal")
        elif f.action == "heal":
            add(f.at, "heal")
        elif f.action in ("loss", "delay"):
            value = f.rate if f.action == "loss" else f.seconds
            add(f.at, f.action, nodes=targets, value=value)
            if end is not None:
                add(end, f.action, nodes=targets, value=0.0)
    return sorted(out)


class Disturbances:
    """Which nodes were down, paused or cut off from which, over time, from applied events.

    A failure declaration by O about P at time t is *justified* if P was crashed or paused, or
    separated from O by a partition, at some moment of ``[t - window, t]`` (the time the
    detector may take to notice and spread it); otherwise it is a false failure. Loss never
    justifies one — the nodes stay reachable — but `lossy` says when a node's links lost
    messages, so false declarations can be told apart by whether loss was there to cause them.
    """

    def __init__(self, n: int, events: list[FaultEvent], end: float) -> None:
        self.n = n
        self.end = end
        self._down: dict[int, list[tuple[float, float]]] = {i: [] for i in range(n)}
        self._cuts: list[tuple[float, float, dict[int, int]]] = []
        self._loss: dict[int, list[tuple[float, float]]] = {i: [] for i in range(n)}
        down_since: dict[int, float] = {}
        loss_since: dict[int, float] = {}
        cut: tuple[float, dict[int, int]] | None = None
        for e in sorted(events):
            if e.action in ("crash", "pause"):
                for i in e.nodes:
                    down_since.setdefault(i, e.t)
            elif e.action in ("restart", "resume"):
                for i in e.nodes:
                    if i in down_since:
                        self._down[i].append((down_since.pop(i), e.t))
            elif e.action == "partition":
                if cut is not None:
                    self._cuts.append((cut[0], e.t, cut[1]))
                group = {i: gi for gi, g in enumerate(e.groups) for i in g}
                cut = (e.t, group)
            elif e.action == "heal" and cut is not None:
                self._cuts.append((cut[0], e.t, cut[1]))
                cut = None
            elif e.action == "loss":
                for i in e.nodes or range(n):  # no targets: every node's links
                    if e.value > 0:
                        loss_since.setdefault(i, e.t)
                    elif i in loss_since:
                        self._loss[i].append((loss_since.pop(i), e.t))
        # still in effect at the end: open-ended, so the sample at t = end sees them too
        for i, t in down_since.items():
            self._down[i].append((t, math.inf))
        for i, t in loss_since.items():
            self._loss[i].append((t, math.inf))
        if cut is not None:
            self._cuts.append((cut[0], math.inf, cut[1]))

    def down(self, i: int, t0: float, t1: float) -> bool:
        return any(a <= t1 and b >= t0 for a, b in self._down[i])

    def down_at(self, i: int, t: float) -> bool:
        return any(a <= t < b for a, b in self._down[i])

    def separated(self, a: int, b: int, t0: float, t1: float) -> bool:
        for s, e, group in self._cuts:
            if s <= t1 and e >= t0 and group.get(a, -1) != group.get(b, -1):
                return True
        return False

    def lossy(self, i: int, t0: float, t1: float) -> bool:
        """Whether node i's links lost messages at some moment of [t0, t1]."""
        return any(a <= t1 and b >= t0 for a, b in self._loss[i])

    def loss_ended_before(self, i: int, t: float) -> bool:
        """Whether a loss on node i's links had ended by t (the aftermath of a loss)."""
        return any(b <= t for _a, b in self._loss[i])

    def justified(self, observer: int, peer: int, t: float, window: float) -> bool:
        return self.down(peer, t - window, t) or self.separated(observer, peer, t - window, t)
