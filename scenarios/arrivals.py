"""The tasks a scenario submits: generated arrivals (Poisson at a rate or a target utilization,
a daily cycle, bursts) or a CSV of tasks, fixed by the seed so every policy sees the same ones.

Offered utilization = task CPU demand per second / the cluster's CPUs left free by the
background on average over the arrival period. Each task's actual work is cpus x expected, so a
task takes exactly `expected` seconds when it gets its CPUs.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.resources import parse_size
from scenarios.sim.background import BackgroundTrace
from scenarios.spec import Scenario, ScenarioError

CSV_COLUMNS = ("at", "cpus", "duration", "memory", "deadline")  # at, cpus, duration required


@dataclass(frozen=True)
class Arrival:
    t: float
    via: int  # node the submit goes through (the runner moves on to the next up node)
    task_id: str
    cpus: float
    memory: int
    expected: float
    deadline: float  # seconds after submission; 0 = none


def mean_background(bg: BackgroundTrace, t0: float, t1: float) -> float:
    """Exact time average of a piecewise-constant trace over [t0, t1]."""
    if t1 <= t0:
        return bg.load(t0)
    t, acc = t0, 0.0
    while t < t1:
        nxt = min(bg.next_change(t), t1)
        acc += bg.load(t) * (nxt - t)
        t = nxt
    return acc / (t1 - t0)


def free_cpus(sc: Scenario, cpus: Sequence[float], traces: Sequence[BackgroundTrace] | None,
              ) -> float:  # fmt: skip
    w = sc.workload
    if not traces:
        return float(sum(cpus))
    return sum(c * (1.0 - mean_background(bg, w.start, w.stop))
               for c, bg in zip(cpus, traces, strict=True))  # fmt: skip


def generate(sc: Scenario, seed: int, cpus: Sequence[float],
             traces: Sequence[BackgroundTrace] | None) -> list[Arrival]:  # fmt: skip
    """The scenario's arrivals for this seed (nodes' CPUs and backgrounds set the rate)."""
    w = sc.workload
    n = sc.cluster.nodes
    rng = random.Random(f"{seed}:arrivals")
    if w.csv:
        return _from_csv(sc, rng)
    out: list[Arrival] = []
    lo, hi = w.duration

    def task(t: float) -> Arrival:
        expected = rng.uniform(lo, hi)
        return Arrival(t, rng.randrange(n), f"t{len(out)}", rng.choice(w.cpus),
                       rng.choice(w.memory), expected, w.deadline_factor * expected)  # fmt: skip

    rate = w.rate
    if w.utilization is not None:
        mean_work = statistics.fmean(w.cpus) * (lo + hi) / 2
        rate = w.utilization * free_cpus(sc, cpus, traces) / max(mean_work, 1e-9)
    if rate:
        peak = rate * (1 + w.daily_amplitude) if w.arrival == "daily" else rate
        t = w.start
        while True:
            t += rng.expovariate(peak)
            if t >= w.stop:
                break
            if w.arrival == "daily":
                now = rate * (1 + w.daily_amplitude * math.sin(2 * math.pi * t / w.daily_period))
                if rng.random() * peak > now:
                    continue
            out.append(task(t))
    for b in w.bursts:
        for k in range(b.count):
            out.append(task(b.at + 0.001 * k))
    out.sort(key=lambda a: a.t)
    return [Arrival(a.t, a.via, f"t{i}", a.cpus, a.memory, a.expected, a.deadline)
            for i, a in enumerate(out)]  # fmt: skip


def _from_csv(sc: Scenario, rng: random.Random) -> list[Arrival]:
    path = Path(sc.workload.csv)
    if not path.is_absolute():
        path = Path(sc.source).parent / path
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read the workload CSV: {e.strerror}") from None
    out = []
    with f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in ("at", "cpus", "duration") if c not in cols]
        unknown = [c for c in cols if c not in CSV_COLUMNS]
        if missing or unknown:
            raise ScenarioError(f"{path}:1: columns must be {', '.join(CSV_COLUMNS)} "
                                f"(missing {missing}, unknown {unknown})")  # fmt: skip
        for row in reader:
            line = reader.line_num

            def num(key: str, default: float | None = None, row: dict = row,
                    line: int = line) -> float:
                return _csv_number(row, key, default, f"{path}:{line}")

            at = num("at")
            if at > sc.duration:
                raise ScenarioError(f"{path}:{line}: at: {at:g} is after the end of the run "
                                    f"({sc.duration:g})")  # fmt: skip
            cpus = num("cpus")
            if not 0 < cpus <= 4096:
                raise ScenarioError(f"{path}:{line}: cpus: {cpus:g} is not in (0, 4096]")
            try:
                memory = parse_size((row.get("memory") or "0").strip() or "0")
            except ValueError as e:
                raise ScenarioError(f"{path}:{line}: memory: {e}") from None
            expected = num("duration")
            deadline = num("deadline", sc.workload.deadline_factor * expected)
            out.append(Arrival(at, rng.randrange(sc.cluster.nodes), "", cpus, memory, expected,
                               deadline))  # fmt: skip
    out.sort(key=lambda a: a.t)
    return [Arrival(a.t, a.via, f"t{i}", a.cpus, a.memory, a.expected, a.deadline)
            for i, a in enumerate(out)]  # fmt: skip


def _csv_number(row: dict, key: str, default: float | None, where: str) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        if default is None:
            raise ScenarioError(f"{where}: {key} is empty")
        return default
    try:
        v = float(text)
    except ValueError:
        raise ScenarioError(f"{where}: {key}: not a number: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ScenarioError(f"{where}: {key}: {text} is out of range")
    return v
