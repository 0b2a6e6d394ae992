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
  detection window before, it was neither crashed nor paused nor cut off from that observer
  (loss cuts nobody off); with loss in the run, split into those made while loss was on the
  observer's or the peer's links (within the window) and those made after it had ended;
- after each heal: the re-merge time, from the heal to the first moment every live node sees
  every other live node alive by its own events, and the flapping: failure declarations after
  the heal about a node the observer was never cut off from;
- resident memory (local mode): each agent's RSS at its first and last sample, its peak, and its
  growth over its last process life (a restart starts a new process, and memory afresh), so
  "memory stays flat" is read from the agents that ran longest.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from scenarios.checkers import run_end
from scenarios.faults import Disturbances
from scenarios.observation import TERMINAL, MemberEvent, Observation, RssSample


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


def _false_declarations(obs: Observation) -> list[tuple[MemberEvent, bool]]:
    """Every false failure declaration, with whether its observer was disturbed (down) then."""
    dist = disturbances(obs)
    w = obs.detection_window
    idx = {n: i for i, n in enumerate(obs.nodes)}
    out = []
    for m in obs.members:
        if m.status != "failed" or m.peer not in idx or m.observer not in idx:
            continue
        o, p = idx[m.observer], idx[m.peer]
        if not dist.justified(o, p, m.t, w):
            out.append((m, dist.down(o, m.t - w, m.t)))
    return out


def false_failures(obs: Observation) -> tuple[int, int]:
    """(false declarations by undisturbed observers, those by disturbed observers)."""
    found = _false_declarations(obs)
    by_disturbed = sum(1 for _m, disturbed in found if disturbed)
    return len(found) - by_disturbed, by_disturbed


def false_failures_by_loss(obs: Observation) -> tuple[int, int]:
    """Undisturbed observers' false declarations (in loss, after loss): *in* when the observer's
    or the peer's links lost messages at some moment of the detection window before it, *after*
    when not but a loss on them had ended — the aftermath, which loss no longer explains."""
    dist = disturbances(obs)
    w = obs.detection_window
    idx = {n: i for i, n in enumerate(obs.nodes)}
    in_loss = after = 0
    for m, disturbed in _false_declarations(obs):
        if disturbed:
            continue
        o, p = idx[m.observer], idx[m.peer]
        if dist.lossy(o, m.t - w, m.t) or dist.lossy(p, m.t - w, m.t):
            in_loss += 1
        elif dist.loss_ended_before(o, m.t) or dist.loss_ended_before(p, m.t):
            after += 1
    return in_loss, after


def all_alive_from(members: Iterable[MemberEvent], nodes: Collection[str], t0: float,
                   t1: float, *, for_good: bool = False) -> float:  # fmt: skip
    """The first moment of [t0, t1] at which every node of `nodes` sees every other one alive,
    by the observers' own events (a pair with no event yet counts as alive: a run starts
    converged); inf if that never happens. With `for_good`, the moment from which that held
    until t1 (inf if it did not hold at t1): when a disturbance's aftermath was over."""
    want = set(nodes)
    view: dict[tuple[str, str], str] = {}
    later: list[MemberEvent] = []
    for m in sorted(members, key=lambda m: m.t):
        if m.observer not in want or m.peer not in want or m.observer == m.peer:
            continue
        if m.t <= t0:
            view[(m.observer, m.peer)] = m.status
        elif m.t <= t1:
            later.append(m)
    bad = {k for k, status in view.items() if status != "alive"}
    if not bad and not for_good:
        return t0
    since = math.inf if bad else t0
    k = 0
    while k < len(later):
        t = later[k].t
        while k < len(later) and later[k].t == t:  # every change of one instant, then check
            m = later[k]
            if m.status == "alive":
                bad.discard((m.observer, m.peer))
            else:
                bad.add((m.observer, m.peer))
            k += 1
        if bad:
            since = math.inf
        elif since == math.inf:
            if not for_good:
                return t
            since = t
    return since


# a fault of these kinds ends the period in which a heal's re-merge is judged
_HEAL_WINDOW_ENDS = ("crash", "restart", "pause", "resume", "partition")


@dataclass(frozen=True)
class HealOutcome:
    """How the cluster came back together after one partition healed."""

    t: float  # when the heal took effect
    remerge: float  # seconds until every live node saw every other live node alive; inf: never
    flaps: int  # failure declarations after it about a node the observer was never cut off from


def heals(obs: Observation) -> list[HealOutcome]:
    """Per heal: the re-merge time and the flapping after it, up to the next fault that changes
    who is up or who can reach whom (or the end). Live nodes: those not down in that period."""
    dist = disturbances(obs)
    w = obs.detection_window
    idx = {n: i for i, n in enumerate(obs.nodes)}
    applied = sorted(obs.faults, key=lambda f: (f.t, f.event.order))
    out = []
    split_at: float | None = None  # scheduled start of the partition (or chain of them) in force
    for k, f in enumerate(applied):
        if f.event.action == "partition" and split_at is None:
            split_at = f.event.t
        if f.event.action != "heal" or split_at is None:
            continue
        th = f.t
        end = next((g.t for g in applied[k + 1:] if g.event.action in _HEAL_WINDOW_ENDS),
                   obs.end)  # fmt: skip
        live = [n for i, n in enumerate(obs.nodes) if not dist.down(i, th, end)]
        back = all_alive_from(obs.members, live, th, end)
        flaps = 0
        for m in obs.members:
            if (m.status == "failed" and th <= m.t <= end and m.observer in live
                    and m.peer in live and m.observer != m.peer):  # fmt: skip
                o, p = idx[m.observer], idx[m.peer]
                if not dist.separated(o, p, split_at, f.event.t) and not dist.justified(
                        o, p, m.t, w):  # fmt: skip
                    flaps += 1
        out.append(HealOutcome(th, back - th, flaps))
        split_at = None
    return out


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
    if any(f.event.action == "loss" and f.event.value > 0 for f in obs.faults):
        out["false_failures_in_loss"], out["false_failures_after_loss"] = (
            false_failures_by_loss(obs))
    found = heals(obs)
    if found:
        merged = [h.remerge for h in found if math.isfinite(h.remerge)]
        out["remerge_time_mean"] = _mean(merged)
        out["remerge_time_max"] = max(merged) if merged else math.nan
        out["heals_unmerged"] = len(found) - len(merged)
        out["heal_flaps"] = sum(h.flaps for h in found)
    out.update(detection_and_recovery(obs))
    out.update(memory_metrics(obs.rss))
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()}  # fmt: skip
