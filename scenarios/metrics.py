"""Figures of one scenario run, computed from its `Observation` alone (both modes alike).

- completion time (submit -> finished) mean / p50 / p99 and slowdown (completion / expected) over
  accepted tasks that succeeded; deadline misses over accepted tasks with a deadline (a task that
  never succeeded missed it); completion rate = succeeded / accepted;
- utilization: the time mean of the nodes' measured load (background + tasks) and its spread
  (standard deviation across nodes of each node's mean);
- submit -> placed latency from the records; agent-to-agent messages per node per second;
- failure detection time: from a crash until every survivor has declared the node failed (a
  crash whose node restarted before that is counted as undetected);
- recovery time: from a crash until each task that was running on the node runs again;
- false failure declarations: a node declared failed by an observer although, during the
  detection window before, it was neither crashed nor paused nor cut off from that observer;
- resident memory (local mode): each agent's RSS at its first and last sample, its peak, and its
  growth over its last process life (a restart starts a new process, and memory afresh), so
  "memory stays flat" is read from the agents that ran longest.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scenarios.checkers import run_end
from scenarios.faults import Disturbances
from scenarios.observation import TERMINAL, Observation, RssSample


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (q in 0..1); nan for no data."""
    if not xs:
        return math.nan
    ys = sorted(xs)
    k = q * (len(ys) - 1)
    lo = math.floor(k)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (k - lo)


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


@dataclass(frozen=True)
class Sample:
    t: float
    live_members: int
    in_flight: int
    task_utilization: float
    total_utilization: float


def disturbances(obs: Observation) -> Disturbances:
    return Disturbances(len(obs.nodes), [f.event for f in obs.faults], obs.end)


def samples(obs: Observation, interval: float) -> list[Sample]:
    """The cluster over time: nodes up, accepted tasks not yet finished, CPU reserved by runs
    as a share of the up nodes' CPUs, and the up nodes' mean measured load."""
    dist = disturbances(obs)
    n = len(obs.nodes)
    steps = max(1, int(obs.end / interval) + 1)
    times = [k * interval for k in range(steps)]
    # load samples binned to the grid: mean per (bin, node)
    load_bins: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t, node, load in obs.loads:
        k = min(steps - 1, max(0, round(t / interval)))
        load_bins[k][node].append(load)
    runs = [(r.start, run_end(obs, r), r.cpus, r.node) for r in obs.runs]
    finished = []
    for task in obs.tasks:
        if task.accepted:
            rec = task.record
            done = rec.finished if rec is not None and rec.state in TERMINAL else math.inf
            finished.append((task.submitted, done))
    out = []
    for k, t in enumerate(times):
        up = [i for i in range(n) if not dist.down_at(i, t)]
        cap = sum(obs.capacity[obs.nodes[i]][0] for i in up) or 1.0
        used = sum(c for s, e, c, _ in runs if s <= t < e)
        in_flight = sum(1 for s, d in finished if s <= t < d)
        per_node = load_bins.get(k, {})
        loads = [statistics.fmean(v) for v in per_node.values()]
        out.append(Sample(t, len(up), in_flight, min(1.0, used / cap), _mean(loads)))
    return out


def node_loads(obs: Observation, interval: float) -> list[tuple[float, str, float]]:
    """Per-node load on the sample grid (mean of the samples in each bin)."""
    bins: dict[tuple[int, str], list[float]] = defaultdict(list)
    for t, node, load in obs.loads:
        bins[(max(0, round(t / interval)), node)].append(load)
    return [(k * interval, node, statistics.fmean(v)) for (k, node), v in sorted(bins.items())]


def detection_and_recovery(obs: Observation) -> dict[str, float]:
    dist = disturbances(obs)
    failed_at: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in obs.members:
        if m.status == "failed":
            failed_at[(m.observer, m.peer)].append(m.t)
    detections, undetected, recoveries, unrecovered = [], 0, [], 0
    restarts = {i: sorted(f.t for f in obs.faults if f.event.action == "restart"
                          and i in f.event.nodes) for i in range(len(obs.nodes))}  # fmt: skip
    for f in obs.faults:
        if f.event.action != "crash":
            continue
        tc = f.t
        for i in f.event.nodes:
            node = obs.nodes[i]
            back = next((t for t in restarts[i] if t >= tc), math.inf)
            horizon = min(back, obs.end)
            survivors = [s for j, s in enumerate(obs.nodes)
                         if j != i and not dist.down(j, tc, horizon)]  # fmt: skip
            times = []
            for s in survivors:
                seen = [t for t in failed_at.get((s, node), ()) if tc <= t <= horizon]
                times.append(min(seen) if seen else math.inf)
            if not obs.has_membership:
                pass
            elif survivors and max(times) < math.inf:
                detections.append(max(times) - tc)
            elif survivors:
                undetected += 1
            for r in obs.runs:
                if r.node == node and r.start <= tc < run_end(obs, r) + 1e-9:
                    again = [x.start for x in obs.runs
                             if x.task == r.task and x.start >= tc and x is not r]  # fmt: skip
                    done = next((t for t in obs.tasks if t.task == r.task), None)
                    if again:
                        recoveries.append(min(again) - tc)
                    elif done is None or done.record is None or done.record.state not in (
                            "cancelled",):  # fmt: skip
                        unrecovered += 1
    return {
        "crashes_detected": len(detections),
        "crashes_undetected": undetected,
        "detection_time_mean": _mean(detections),
        "detection_time_max": max(detections) if detections else math.nan,
        "recovery_time_mean": _mean(recoveries),
        "recovery_time_max": max(recoveries) if recoveries else math.nan,
        "tasks_recovered": len(recoveries),
        "tasks_unrecovered": unrecovered,
    }


def false_failures(obs: Observation) -> tuple[int, int]:
    """(false declarations by undisturbed observers, those by disturbed observers)."""
    dist = disturbances(obs)
    w = obs.detection_window
    by_ok = by_disturbed = 0
    idx = {n: i for i, n in enumerate(obs.nodes)}
    for m in obs.members:
        if m.status != "failed" or m.peer not in idx or m.observer not in idx:
            continue
        o, p = idx[m.observer], idx[m.peer]
        if dist.justified(o, p, m.t, w):
            continue
        if dist.down(o, m.t - w, m.t):
            by_disturbed += 1
        else:
            by_ok += 1
    return by_ok, by_disturbed


@dataclass(frozen=True)
class AgentMemory:
    """One agent's resident memory over a run, in bytes."""

    node: str
    start: int  # first sample
    end: int  # last sample
    peak: int
    growth: int  # last minus first sample of its last process (the life that ran longest)
    restarts: int  # processes after the first


def _node_key(node: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", node) if p)


STARTUP_SECONDS = 10.0  # an agent process's RSS is not yet its working size before this


def agent_memory(samples: Iterable[RssSample]) -> list[AgentMemory]:
    """Per agent (in node order): RSS at start and end, peak, growth of its last process."""
    by_node: dict[str, list[RssSample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.t):
        by_node[s.node].append(s)
    out = []
    for node in sorted(by_node, key=_node_key):
        ss = by_node[node]
        last_life = [s for s in ss if s.pid == ss[-1].pid]
        # from the first sample once the process had started up: a sample taken while it was
        # still importing made a restarted agent look as if it had grown by half its size
        settled = [s for s in last_life if s.t >= last_life[0].t + STARTUP_SECONDS]
        base = settled[0] if settled else last_life[0]
        out.append(AgentMemory(node, ss[0].rss, ss[-1].rss, max(s.rss for s in ss),
                               last_life[-1].rss - base.rss,
                               len({s.pid for s in ss}) - 1))  # fmt: skip
    return out


def memory_metrics(samples: Iterable[RssSample]) -> dict[str, int]:
    """The largest start, end and growth over the agents (empty without samples)."""
    mem = agent_memory(samples)
    if not mem:
        return {}
    return {"rss_start_max": max(m.start for m in mem), "rss_end_max": max(m.end for m in mem),
            "rss_growth_max": max(m.growth for m in mem)}  # fmt: skip


def compute(obs: Observation) -> dict[str, float | int | None]:
    accepted = [t for t in obs.tasks if t.accepted]
    done = [t for t in accepted if t.record is not None and t.record.state == "succeeded"]
    completion = [t.record.finished - t.submitted for t in done]
    slowdown = [(t.record.finished - t.submitted) / t.expected for t in done if t.expected > 0]
    with_deadline = [t for t in accepted if t.deadline > 0]
    missed = sum(1 for t in with_deadline if t.record is None or t.record.state != "succeeded"
                 or t.record.finished - t.submitted > t.deadline)  # fmt: skip
    placed = [t.record.placed - t.record.submitted for t in accepted
              if t.record is not None and math.isfinite(t.record.placed)
              and t.record.placed > 0]  # fmt: skip
    per_node: dict[str, list[float]] = defaultdict(list)
    for _t, node, load in obs.loads:
        per_node[node].append(load)
    node_means = [statistics.fmean(v) for v in per_node.values() if v]
    n = len(obs.nodes)
    ok, disturbed = false_failures(obs)
    out: dict[str, float | int | None] = {
        "tasks": len(obs.tasks),
        "accepted": len(accepted),
        "completed": len(done),
        "completion_rate": len(done) / len(accepted) if accepted else math.nan,
        "mean_completion": _mean(completion),
        "p50_completion": percentile(completion, 0.5),
        "p99_completion": percentile(completion, 0.99),
        "mean_slowdown": _mean(slowdown),
        "deadline_misses": missed / len(with_deadline) if with_deadline else math.nan,
        "mean_utilization": _mean(node_means),
        "utilization_spread": statistics.pstdev(node_means) if len(node_means) > 1 else math.nan,
        "p50_submit_to_placed": percentile(placed, 0.5),
        "p99_submit_to_placed": percentile(placed, 0.99),
        "messages_per_node_s": obs.messages_sent / n / obs.end if n and obs.end > 0 else math.nan,
        "false_failures": ok,
        "false_failures_by_disturbed": disturbed,
        "runs": len(obs.runs),
    }
    out.update(detection_and_recovery(obs))
    out.update(memory_metrics(obs.rss))
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()}  # fmt: skip
