"""Sim mode: a scenario played on the deterministic simulator with the agents' own cores.

One `PlacementCluster` per (policy, seed): `NodeCore`s (membership + placement, the code the
agent runs) on `SimExecutor`s that replay each node's background trace, started converged. The
scenario's arrivals are submitted through the chosen node (or the next one that is up), its
fault timeline is applied at its instants, and the runner samples every `sample_interval`
(loads; the member events the simulator kept, `Simulator.take_events`). Same scenario + seed =>
the same bytes out.

What the simulator does not model (see docs/scenarios.md): processing time inside a node, and
TCP — its network is datagrams, so loss is loss here, where ZeroMQ over TCP turns it into delay.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

from agent.placement_config import PlacementConfig
from agent.tasks import TaskSpec
from gossip.config import SwimConfig
from gossip.messages import Status
from scenarios.faults import FaultEvent, resolve
from scenarios.observation import (
    AppliedFault,
    Commit,
    MemberEvent,
    Observation,
    Record,
    Run,
    TaskOutcome,
)
from scenarios.policies import POLICIES, forecaster
from scenarios.sim.background import BackgroundTrace, assign_traces
from scenarios.sim.network import NetworkModel
from scenarios.sim.placement_cluster import NodeShape, PlacementCluster
from scenarios.spec import Scenario

MECHANISMS = {
    "crash": "simulator: node stops, messages to it dropped",
    "restart": "simulator: fresh core, same id and address, joins a live node",
    "pause": "simulator: node frozen, messages buffered (like SIGSTOP)",
    "resume": "simulator: buffered messages processed (like SIGCONT)",
    "partition": "simulator: messages between groups dropped",
    "heal": "simulator: partition removed",
    "loss": "simulator: datagram loss per message",
    "delay": "simulator: added one-way latency",
}

Progress = Callable[[float, int, int], None]
"""progress(scenario time, tasks finished, faults applied)"""


def shapes(sc: Scenario, seed: int) -> list[NodeShape]:
    """Each node's class, in proportion to the classes' shares, shuffled by the seed."""
    n = sc.cluster.nodes
    total = sum(c.share for c in sc.cluster.classes)
    counts = [math.floor(n * c.share / total) for c in sc.cluster.classes]
    by_remainder = sorted(range(len(counts)), key=lambda i: -(n * sc.cluster.classes[i].share
                                                                / total - counts[i]))  # fmt: skip
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    out = [NodeShape(c.cpus, c.memory, c.gpus, dict(c.labels))
           for c, k in zip(sc.cluster.classes, counts, strict=True) for _ in range(k)]  # fmt: skip
    random.Random(f"{seed}:shapes").shuffle(out)
    return out


def backgrounds(sc: Scenario, seed: int) -> list[BackgroundTrace] | None:
    """Each node's replayed trace (phase rounded to whole samples), or None for no background."""
    bg = sc.background
    if bg.traces == "none":
        return None
    out = []
    for t in assign_traces(bg.traces, sc.cluster.nodes, seed, bg.step, exclude_trained=True):
        offset = (round(t.offset / bg.step) % len(t)) * bg.step
        out.append(BackgroundTrace(t.values, bg.step, offset, t.name))
    return out


def configs(sc: Scenario, policy: str) -> tuple[SwimConfig, PlacementConfig]:
    placement = {"forecast_step": sc.background.step, **sc.cluster.placement,
                 "policy": POLICIES[policy][0]}  # fmt: skip
    return SwimConfig(**sc.cluster.swim), PlacementConfig(**placement)


def _record(r: object) -> Record:
    return Record(
        state=r.state.label, node=r.node, attempt=r.attempt, exit_code=r.exit_code,
        submitted=r.submitted, placed=r.placed if r.placed > 0 else math.nan,
        started=r.started if r.started > 0 else math.nan,
        finished=r.finished if r.state.terminal else math.nan,
    )  # fmt: skip


def run(sc: Scenario, policy: str, seed: int, progress: Progress | None = None,
        stop: Callable[[], bool] = lambda: False) -> Observation:  # fmt: skip
    """Play the scenario once. `stop()` true ends it early (the observation is incomplete)."""
    from scenarios.arrivals import generate

    swim, placement = configs(sc, policy)
    node_shapes = shapes(sc, seed)
    traces = backgrounds(sc, seed)
    fc = forecaster(POLICIES[policy][1])
    cluster = PlacementCluster(
        sc.cluster.nodes, seed, shape=node_shapes, background=traces, placement=placement,
        swim=swim, forecaster=fc, network=NetworkModel(), sample_step=sc.cluster.load_interval,
    )  # fmt: skip
    sim = cluster.sim
    n = sc.cluster.nodes
    if fc is not None and traces is not None and sc.background.warmup:
        step = sc.background.step
        for addr, bg in zip(cluster.addrs, traces, strict=True):
            core = cluster.core(addr)
            for j in range(sc.background.warmup, 0, -1):
                core.observe_load(-j * step, bg.load(-j * step))
    obs = Observation(policy, seed, "sim", list(cluster.ids),
                      {cluster.ids[i]: (s.cpus, s.memory, s.gpus)
                       for i, s in enumerate(node_shapes)},  # fmt: skip
                      sc.duration, detection_window=cluster.detection_time())
    arrivals = generate(sc, seed, [s.cpus for s in node_shapes], traces)
    outcomes: dict[str, TaskOutcome] = {}
    requests = {}

    def submit_at(a: object) -> Callable[[object], None]:
        def go(_sim: object) -> None:
            via = next((cluster.addrs[(a.via + k) % n] for k in range(n)
                        if sim.is_up(cluster.addrs[(a.via + k) % n])), None)  # fmt: skip
            spec = TaskSpec(argv=("sim",), cpus=a.cpus, memory=a.memory, expected=a.expected,
                            deadline=a.deadline)  # fmt: skip
            outcomes[a.task_id] = TaskOutcome(a.task_id, sim.now, False, a.cpus, a.memory,
                                              a.expected, a.deadline)  # fmt: skip
            if via is None:
                outcomes[a.task_id].error = "no node up to submit through"
                return
            requests[a.task_id] = cluster.submit(a.task_id, spec, via=via)

        return go

    for a in arrivals:
        sim.schedule(a.t, submit_at(a))
    events = resolve(sc, seed)
    per_node: dict[str, dict[int, float]] = {"loss": {}, "delay": {}}  # targeted, in effect
    for e in events:
        sim.schedule(e.t, _applier(cluster, obs, e, per_node))
    cluster.scheduled_until = max([sc.duration, *(e.t for e in events)])

    def drain_members() -> None:
        for addr, node in cluster.nodes.items():
            if sim.state(addr) == "crashed":
                continue
            me = node.core.node_id
            for t, peer, status, _inc in sim.take_events(addr):
                if peer != me:
                    obs.members.append(MemberEvent(t, me, peer, Status(status).label))

    def sample() -> None:
        drain_members()
        now = sim.now
        for addr, node in cluster.nodes.items():
            if sim.is_up(addr):
                obs.loads.append((now, node.core.node_id, node.executor.load(now)))

    t = 0.0
    interval = sc.sample_interval
    end = sc.duration + sc.drain
    checks = 0
    sample()
    while t < end:
        if stop():
            obs.complete = False
            obs.notes.append(f"interrupted at t={t:.1f} s")
            break
        t = min(end, t + interval)
        cluster.run_until(t)
        sample()
        if t >= sc.duration:
            checks += 1
            if checks % 5 == 0 and all(r.reply is not None for r in requests.values()) \
                    and not cluster.lost_tasks():  # fmt: skip
                break
        if progress is not None and (checks % 5 == 0 or t < sc.duration):
            progress(t, sum(len(nd.core.placement.owner.committed_results)
                            for _, nd in cluster.all_nodes()), len(obs.faults))
    obs.end = sim.now
    _collect(cluster, obs, outcomes, requests)
    return obs


def _applier(cluster: PlacementCluster, obs: Observation, e: FaultEvent,
             per_node: dict[str, dict[int, float]]) -> Callable[[object], None]:  # fmt: skip
    sim = cluster.sim
    addrs = cluster.addrs

    def go(_sim: object) -> None:
        a = e.action
        if a in ("crash", "restart", "pause", "resume"):  # PlacementCluster's methods
            for i in e.nodes:
                getattr(cluster, a)(i)
        elif a == "partition":
            cluster.partition(*e.groups)
        elif a == "heal":
            cluster.heal()
        elif a == "loss" or a == "delay":
            targets = e.nodes or ()
            if not targets:
                if a == "loss":
                    sim.set_loss(e.value)
                else:
                    sim.network.set_latency(NetworkModel().latency + e.value)
            else:
                # set_link replaces a link's whole override: keep the other kind of fault
                # (and the other end's) in effect, as local mode keeps loss and delay apart
                per_node[a].update(dict.fromkeys(targets, e.value))
                loss, delay = per_node["loss"], per_node["delay"]
                base = NetworkModel().latency
                for i in targets:
                    for j in range(len(addrs)):
                        if j != i:
                            p = max(loss.get(i, 0.0), loss.get(j, 0.0))
                            d = max(delay.get(i, 0.0), delay.get(j, 0.0))
                            sim.set_link(addrs[i], addrs[j], loss=p or None,
                                         latency=base + d if d else None)
        obs.faults.append(AppliedFault(e, sim.now, MECHANISMS[a]))

    return go


def _collect(cluster: PlacementCluster, obs: Observation, outcomes: dict[str, TaskOutcome],
             requests: dict) -> None:  # fmt: skip
    records = cluster.records()
    for tid, o in outcomes.items():
        r = requests.get(tid)
        if r is not None:
            o.accepted = r.ok
            o.error = r.error
            if r.ok and isinstance(r.data, dict):
                o.replicas = tuple(r.data.get("replicas", ()))
        rec = records.get(tid)
        if rec is not None and o.accepted:
            o.record = _record(rec)
    obs.tasks = [outcomes[k] for k in sorted(outcomes, key=lambda k: int(k[1:]))]
    for _addr, node in cluster.all_nodes():
        me = node.core.node_id
        ex = node.executor
        ends = {(e.exit.task_id, e.exit.attempt, e.started): e for e in ex.ended}
        for t, tid, att in ex.starts:
            spec = ex.specs[(tid, att)]
            run = Run(me, tid, att, t, float(spec.cpus), int(spec.memory), int(spec.gpus))
            e = ends.get((tid, att, t))
            if e is not None:
                run = replace(run, end=e.ended, state=e.exit.state.label,
                              exit_code=e.exit.exit_code)  # fmt: skip
            obs.runs.append(run)
        for tid, att, runner, st in node.core.placement.owner.committed_results:
            obs.commits.append(Commit(math.nan, me, tid, att, runner, st.label))
    obs.messages_sent = cluster.retired_sent + sum(
        cluster.sim.node_stats(a).sent for a in cluster.addrs)
    violations = cluster.overcommit_violations()
    if violations:
        obs.extra_problems["overcommit"] = violations
