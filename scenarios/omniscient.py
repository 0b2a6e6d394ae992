"""The `omniscient` baseline (sim only): a central scheduler that knows every node's true present
and future background load, with no messages and no delay — the ideal placement is measured
against, labelled as such in every report.

It runs the same nodes, backgrounds and arrivals as the protocol runs of the same seed, on the
same `SimExecutor` contention model, under the same admission rule as an agent's ledger (the
CPUs, memory and GPUs reserved on a node never exceed what it offers). Each task, in arrival
order, goes at once to the node with the most CPU left over the task's whole expected run,
computed from the true future background; a task that fits nowhere waits in a queue served in
order whenever resources free up (later tasks may start first if they fit: backfilling).

Faults: a crash ends the node's runs, which go back to the head of the queue as a new attempt; a
restarted node comes back empty; a paused node takes no new tasks (its runs go on, as a stopped
agent's children do). Partitions, loss and delay do not touch a central scheduler that sees all.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.execution import StartTask
from agent.tasks import TaskSpec
from scenarios.arrivals import Arrival, generate
from scenarios.faults import resolve
from scenarios.observation import AppliedFault, Commit, Observation, Record, Run, TaskOutcome
from scenarios.sim.background import BackgroundTrace
from scenarios.sim.workload import SimExecutor
from scenarios.spec import Scenario

MECHANISM = "omniscient: applied to the central scheduler's model"
EPS = 1e-9


@dataclass
class _Node:
    name: str
    cpus: float
    memory: int
    gpus: int
    background: BackgroundTrace
    executor: SimExecutor
    up: bool = True
    schedulable: bool = True
    used: list[float] = field(default_factory=lambda: [0.0, 0, 0])  # cpus, memory, gpus
    runs: dict[tuple[str, int], Run] = field(default_factory=dict)
    seen: int = 0  # runs of `executor.ended` already accounted for

    def fits(self, a: Arrival) -> bool:
        return (self.used[0] + a.cpus <= self.cpus + EPS and self.used[1] + a.memory
                <= self.memory)  # fmt: skip

    def headroom(self, t: float, a: Arrival) -> float:
        """CPUs left for others at the worst moment of [t, t + expected] if `a` ran here."""
        bg = self.background
        peak, u, end = bg.load(t), t, t + a.expected
        while True:
            u = bg.next_change(u)
            if u >= end:
                break
            peak = max(peak, bg.load(u))
        return self.cpus * (1.0 - peak) - self.used[0] - a.cpus


def run(sc: Scenario, seed: int, progress: Callable[[float, int, int], None] | None = None,
        stop: Callable[[], bool] = lambda: False) -> Observation:  # fmt: skip
    from scenarios.run_sim import backgrounds, shapes

    node_shapes = shapes(sc, seed)
    traces = backgrounds(sc, seed) or [BackgroundTrace.constant(0.0)] * sc.cluster.nodes
    names = [f"n{i}" for i in range(sc.cluster.nodes)]
    nodes = [_Node(names[i], s.cpus, s.memory, s.gpus, traces[i], SimExecutor(s.cpus, traces[i]))
             for i, s in enumerate(node_shapes)]  # fmt: skip
    obs = Observation("omniscient", seed, "sim", names,
                      {nd.name: (nd.cpus, nd.memory, nd.gpus) for nd in nodes}, sc.duration,
                      detection_window=0.0, has_membership=False)  # fmt: skip
    arrivals = generate(sc, seed, [s.cpus for s in node_shapes],
                        None if sc.background.traces == "none" else traces)
    outcomes = {a.task_id: TaskOutcome(a.task_id, a.t, True, a.cpus, a.memory, a.expected,
                                       a.deadline) for a in arrivals}  # fmt: skip
    by_id = {a.task_id: a for a in arrivals}
    attempts: dict[str, int] = {}
    queue: list[str] = []
    timeline: list[tuple[float, int, str, object]] = []
    for k, a in enumerate(arrivals):
        timeline.append((a.t, k, "arrive", a.task_id))
    for e in resolve(sc, seed):
        timeline.append((e.t, len(timeline), "fault", e))
    k = 0
    while k * sc.sample_interval <= sc.duration + sc.drain:
        timeline.append((k * sc.sample_interval, len(timeline), "sample", None))
        k += 1
    heapq.heapify(timeline)
    finished = 0

    def place(t: float) -> None:
        waiting = []
        for tid in queue:
            a = by_id[tid]
            best = max((nd for nd in nodes if nd.up and nd.schedulable and nd.fits(a)),
                       key=lambda nd: nd.headroom(t, a), default=None)  # fmt: skip
            if best is None:
                waiting.append(tid)
                continue
            att = attempts[tid] = attempts.get(tid, 0) + 1
            spec = TaskSpec(argv=("sim",), cpus=a.cpus, memory=a.memory, expected=a.expected)
            best.executor.start(t, StartTask(tid, att, spec))
            best.used[0] += a.cpus
            best.used[1] += a.memory
            run_ = Run(best.name, tid, att, t, a.cpus, a.memory)
            best.runs[(tid, att)] = run_
            obs.runs.append(run_)
            o = outcomes[tid]
            placed = o.record.placed if o.record is not None else t
            o.record = Record("running", best.name, att, 0, a.t, placed, t, math.nan)
        queue[:] = waiting

    def advance(t: float) -> None:
        nonlocal finished
        for nd in nodes:
            if not nd.up:
                continue
            nd.executor.advance(t)
            ended = nd.executor.ended
            while nd.seen < len(ended):
                end = ended[nd.seen]
                nd.seen += 1
                ex = end.exit
                r = nd.runs.pop((ex.task_id, ex.attempt))
                r.end, r.state, r.exit_code = end.ended, ex.state.label, ex.exit_code
                nd.used[0] -= r.cpus
                nd.used[1] -= r.memory
                o = outcomes[ex.task_id]
                o.record = Record(ex.state.label, nd.name, ex.attempt, ex.exit_code,
                                  o.submitted, o.record.placed, o.record.started, r.end)
                obs.commits.append(Commit(r.end, "omniscient", ex.task_id, ex.attempt, nd.name,
                                          ex.state.label))  # fmt: skip
                finished += 1

    t = 0.0
    end_of_run = sc.duration + sc.drain
    while timeline:
        if stop():
            obs.complete = False
            obs.notes.append(f"interrupted at t={t:.1f} s")
            break
        nxt = min((nd.executor.next_event() for nd in nodes if nd.up and nd.runs),
                  default=math.inf)  # fmt: skip
        t = min(timeline[0][0], nxt)
        if t > end_of_run:
            break
        advance(t)
        while timeline and timeline[0][0] <= t:
            _, _, kind, x = heapq.heappop(timeline)
            if kind == "arrive":
                queue.append(x)
            elif kind == "fault":
                _apply(x, nodes, queue, obs, t)
            else:
                for nd in nodes:
                    if nd.up:
                        obs.loads.append((t, nd.name, nd.executor.load(t)))
                if progress is not None:
                    progress(t, finished, len(obs.faults))
                if t >= sc.duration and finished == len(arrivals):
                    timeline.clear()
        place(t)
    obs.end = t
    obs.tasks = list(outcomes.values())
    return obs


def _apply(e: object, nodes: list[_Node], queue: list[str], obs: Observation, t: float) -> None:
    if e.action == "crash":
        for i in e.nodes:
            nd = nodes[i]
            if not nd.up:
                continue
            nd.up = False
            for (tid, _att), r in sorted(nd.runs.items(), key=lambda kv: kv[1].start):
                r.end, r.state = t, "killed"
                queue.insert(0, tid)
            nd.runs.clear()
            nd.used = [0.0, 0, 0]
    elif e.action == "restart":
        for i in e.nodes:
            nd = nodes[i]
            if not nd.up:
                nd.up, nd.schedulable = True, True
                nd.executor = SimExecutor(nd.cpus, nd.background)
                nd.seen = 0
                nd.executor.advance(t)
    elif e.action in ("pause", "resume"):
        for i in e.nodes:
            nodes[i].schedulable = e.action == "resume"
    obs.faults.append(AppliedFault(e, t, MECHANISM))
