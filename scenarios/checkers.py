"""Invariant checkers run on every scenario run, in both modes, on an `Observation` only.

Each returns human-readable problems (empty = the invariant held):

- `lost` — an accepted task of which no agent holds a record at the end;
- `stuck` — an accepted task whose newest record is still not terminal when the run ends;
- `duplicate_results` — two results recorded for one task naming different runs or states;
- `unmatched_results` — a recorded succeeded/failed result that no run on the named node ended
  with (same attempt, state and exit code);
- `overcommit` — at some instant the runs on a node reserved more CPUs, memory or GPUs than it
  offers (a run whose node crashed ends at the crash: its processes die with the agent), plus
  whatever the mode checks itself at every instant (the simulator's ledgers).
"""

from __future__ import annotations

from collections import defaultdict

from scenarios.observation import TERMINAL, Observation, Run

CHECKERS = ("lost", "stuck", "duplicate_results", "unmatched_results", "overcommit")
EPS = 1e-6  # CPU sums are floats


def lost(obs: Observation) -> list[str]:
    out = []
    for t in obs.tasks:
        if t.accepted and t.record is None:
            why = ""
            if t.replicas and all(any(c >= t.submitted for c in obs.crash_times(r))
                                  for r in t.replicas):  # fmt: skip
                why = (f" (all of its replicas {', '.join(t.replicas)} crashed: beyond the "
                       "r - 1 failures a record survives)")
            out.append(f"{t.task}: accepted at {t.submitted:.2f} s, no agent holds its "
                       f"record{why}")  # fmt: skip
    return out


def stuck(obs: Observation) -> list[str]:
    return [f"{t.task}: still {t.record.state} at the end (attempt {t.record.attempt} on "
            f"{t.record.node or '-'})"
            for t in obs.tasks
            if t.accepted and t.record is not None and t.record.state not in TERMINAL]  # fmt: skip


def duplicate_results(obs: Observation) -> list[str]:
    by_task: dict[str, set[tuple[int, str, str]]] = defaultdict(set)
    for c in obs.commits:
        by_task[c.task].add((c.attempt, c.runner, c.state))
    return [f"{task}: results recorded for " + ", ".join(
                f"attempt {a} on {r} ({s})" for a, r, s in sorted(results))
            for task, results in sorted(by_task.items()) if len(results) > 1]  # fmt: skip


def unmatched_results(obs: Observation) -> list[str]:
    ends: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for r in obs.runs:
        if r.end is not None:
            ends[(r.node, r.task, r.attempt)].append(r)
    out = []
    for t in obs.tasks:
        rec = t.record
        if rec is None or rec.state not in ("succeeded", "failed"):
            continue
        runs = ends.get((rec.node, t.task, rec.attempt), [])
        if not any(r.state == rec.state and r.exit_code == rec.exit_code for r in runs):
            seen = ", ".join(f"{r.state}/{r.exit_code}" for r in runs) or "no run that ended"
            out.append(f"{t.task}: recorded {rec.state}/{rec.exit_code} for attempt "
                       f"{rec.attempt} on {rec.node}, which had {seen}")  # fmt: skip
    return out


def run_end(obs: Observation, r: Run) -> float:
    """When a run stopped holding its node's resources: its end, else its node's next crash
    after it started, else the end of the observation."""
    if r.end is not None:
        return r.end
    later = [t for t in obs.crash_times(r.node) if t >= r.start]
    return min(later) if later else obs.end


def overcommit(obs: Observation) -> list[str]:
    out = list(obs.extra_problems.get("overcommit", ()))
    per_node: dict[str, list[tuple[float, int, Run]]] = defaultdict(list)
    for r in obs.runs:
        e = run_end(obs, r)
        if e <= r.start:  # held nothing over any interval (and its end would sort first)
            continue
        per_node[r.node].append((r.start, 1, r))
        per_node[r.node].append((e, 0, r))  # ends before starts at one instant
    for node, points in per_node.items():
        cap_cpus, cap_mem, cap_gpus = obs.capacity[node]
        cpus = 0.0
        mem = gpus = 0
        running: set[tuple[str, int]] = set()
        for t, kind, r in sorted(points, key=lambda p: (p[0], p[1])):
            key = (r.task, r.attempt)
            if kind == 0:
                if key in running:
                    running.discard(key)
                    cpus -= r.cpus
                    mem -= r.memory
                    gpus -= r.gpus
                continue
            running.add(key)
            cpus += r.cpus
            mem += r.memory
            gpus += r.gpus
            if cpus > cap_cpus + EPS or mem > cap_mem or gpus > cap_gpus:
                out.append(f"{node} at {t:.3f} s: runs reserve {cpus:g} CPUs / {mem} B / "
                           f"{gpus} GPUs of {cap_cpus:g} / {cap_mem} / {cap_gpus}")  # fmt: skip
    return out


def check(obs: Observation) -> dict[str, list[str]]:
    """Every checker's findings, by name (an empty list = passed)."""
    return {
        "lost": lost(obs),
        "stuck": stuck(obs),
        "duplicate_results": duplicate_results(obs),
        "unmatched_results": unmatched_results(obs),
        "overcommit": overcommit(obs),
    }
