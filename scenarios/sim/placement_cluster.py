"""Simulated placement clusters: whole node cores (membership + placement) on the Simulator,
each running its tasks on a `SimExecutor`, with invariant checkers for tests and scenarios.

`PlacementCluster(n, seed, ...)` builds n `agent.node.NodeCore`s that already know each other
(as `scenarios.sim.cluster.bootstrap_swim_cluster` does for bare membership cores), each wrapped
in a `SimNode` + `SimExecutor` and hosted at ``sim://n{i}``. Per-node capacity and labels
(`NodeShape`), background load traces, the `PlacementConfig`, the `SwimConfig` and the
forecaster are passed through; same seed + same calls => the same run, bit for bit.

Scenario helpers schedule client requests through any node at chosen virtual times
(`submit`, `cancel`, `get`) and keep their replies: only a submit answered ok is *accepted*.
Failures (`crash`, `restart`, `pause`, `resume`, `partition`, `heal`) can be applied now,
scheduled, or
fired by a `watch` callback the instant a node handles some message.

Checkers (each returns a list of human-readable problems, empty = fine):

- `overcommit_violations` — recorded at EVERY instant: after every call into every node
  (message, tick, scenario call) the node's ledger (leases + commitments) and its executor's
  actually running tasks are compared with its capacity, every running task must be covered
  by a commitment, and the ledger checks itself after every lease or commitment it grants;
- `lost_tasks` — every accepted task is terminal in the newest copy (`agent.records.newer`)
  held by the nodes that did not crash, or was collected after its retention (a tombstone);
- `double_results` — at most one result is ever recorded per task across all nodes (crashed
  ones included; `Owner.committed_results`, where an owner notes a result once every live
  replica holds it): two naming a different (attempt, node), or the same run with a different
  state, are a double result;
- `replica_disagreements` — the live replicas of the newest copy all hold its result, and no
  other live copy with another result still has a live owner of its own;
- `result_mismatches` — every recorded succeeded/failed result is a run that the named node's
  executor really ended that way;
- `broken_cancels` — every cancel answered ok ends with the task cancelled;
- `repeated_attempts` — no attempt of a task is started twice on one node;
- `ignored_counters` — what nodes counted as ignored or stale, summed over the cluster.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.effects import Effect, Reply
from agent.execution import StartTask
from agent.ledger import Demand, Ledger
from agent.node import NodeCore
from agent.placement_config import PlacementConfig
from agent.records import newer
from agent.tasks import TaskRecord, TaskSpec, TaskState
from gossip.config import FAST_SWIM as FAST_SWIM_TIMINGS
from gossip.config import SwimConfig
from gossip.messages import MemberUpdate, Message, ResourceRecord, Status, SyncReply
from scenarios.sim.background import BackgroundTrace
from scenarios.sim.cluster import node_id
from scenarios.sim.network import NetworkModel, StreamConfig
from scenarios.sim.simulator import Simulator
from scenarios.sim.workload import SimExecutor, SimNode, on_core

GiB = 1 << 30

FAST_SWIM = SwimConfig(**FAST_SWIM_TIMINGS)  # the local cluster's timings

# placement timings scaled to the fast membership above and a 1 ms network
FAST_PLACEMENT = PlacementConfig(
    bid_timeout=0.1, lease=0.5, award_timeout=0.3, award_retries=3, backoff_min=0.1,
    backoff_max=2.0, put_timeout=0.3, submit_timeout=3.0, request_timeout=0.5, heartbeat=0.5,
    report_retry=0.3, runner_silence=5.0, publish_interval=0.5, publish_heartbeat=5.0,
)  # fmt: skip

# what nodes count when they ignore a message or a stale event (agent/worker.py, the owner
# and its parts)
IGNORED_COUNTERS = (
    "unsolicited_bids", "stale_releases", "stale_awards", "duplicate_awards", "stale_reports",
    "stale_award_acks", "stale_report_acks", "unknown_exits", "stale_replies", "put_conflicts",
    "unexpected_messages",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodeShape:
    """What one simulated node offers."""

    cpus: float = 4.0
    memory: int = 16 * GiB
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def task_spec(
    cpus: float = 1.0, expected: float = 2.0, memory: int = 0, gpus: int = 0,
    labels: dict[str, str] | None = None, timeout: float = 0.0, name: str = "work",
) -> TaskSpec:  # fmt: skip
    """A simulated task: `expected` seconds of work at full speed on `cpus` CPUs."""
    return TaskSpec(argv=(name,), cpus=cpus, memory=memory, gpus=gpus, labels=dict(labels or {}),
                    expected=expected, timeout=timeout)  # fmt: skip


@dataclass(slots=True)
class Request:
    """One client request made through a node; `reply` is (ok, data, error) once answered."""

    kind: str  # submit | get | cancel | list
    task_id: str
    via: str
    at: float
    req: int
    spec: TaskSpec | None = None
    reply: tuple[bool, Any, str] | None = None
    replied_at: float = math.nan

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply[0]

    @property
    def error(self) -> str:
        return "" if self.reply is None else self.reply[2]

    @property
    def data(self) -> Any:
        return None if self.reply is None else self.reply[1]


@dataclass(frozen=True, slots=True)
class Violation:
    time: float
    addr: str
    what: str

    def __str__(self) -> str:
        return f"t={self.time:.4f} {self.addr}: {self.what}"


class CheckedLedger(Ledger):
    """A ledger that reports, the moment it happens, any lease or commitment beyond capacity."""

    def __init__(self, cpus: float, memory: int, gpus: int,
                 on_violation: Callable[[str], None]) -> None:  # fmt: skip
        super().__init__(cpus, memory, gpus)
        self._on_violation = on_violation

    def _check(self, what: str, key: tuple) -> None:
        if self.over_committed():
            u = self.used()
            self._on_violation(f"ledger over capacity after {what} {key}: used {u}, "
                               f"capacity {self.capacity}")  # fmt: skip

    def lease(self, key: tuple, d: Demand, expires: float) -> bool:
        ok = super().lease(key, d, expires)
        self._check("lease", key)
        return ok

    def commit(self, key: tuple, d: Demand, lease_key: tuple | None = None) -> bool:
        ok = super().commit(key, d, lease_key)
        self._check("commit", key)
        return ok


class CheckedExecutor(SimExecutor):
    """A SimExecutor that remembers every run it started (for resource and run accounting)."""

    def __init__(self, cpus: float, background: BackgroundTrace | None = None) -> None:
        super().__init__(cpus, background)
        self.specs: dict[tuple[str, int], TaskSpec] = {}
        self.starts: list[tuple[float, str, int]] = []  # (time, task, attempt)

    def start(self, now: float, action: StartTask) -> None:
        key = (action.task_id, action.attempt)
        again = key in self.running()  # SimExecutor leaves a run that is still going alone
        self.specs[key] = action.spec
        super().start(now, action)
        if not again:
            self.starts.append((now, action.task_id, action.attempt))

    def running_demand(self) -> Demand:
        specs = [self.specs[k] for k in self.running()]
        return Demand(sum(float(s.cpus) for s in specs), sum(int(s.memory) for s in specs),
                      sum(int(s.gpus) for s in specs))  # fmt: skip


class CheckedNode(SimNode):
    """A SimNode that checks the node's invariants after every call into it, gives its client
    replies to the requests they answer and runs the cluster's watchers."""

    def __init__(self, cluster: PlacementCluster, addr: str, core: NodeCore,
                 executor: CheckedExecutor, sample_step: float,
                 first_sample: float = 0.0) -> None:  # fmt: skip
        super().__init__(core, executor, sample_step, first_sample)
        self.cluster = cluster
        self.addr = addr
        self.checked_state: tuple[int, int, int] | None = None  # see `_check_node`

    def on_message(self, now: float, msg: Any) -> list:
        out = super().on_message(now, msg)
        self.cluster._after(self, now, msg)
        return out

    def on_tick(self, now: float) -> list:
        out = super().on_tick(now)
        self.cluster._after(self, now, None)
        return out

    def run(self, now: float, fn: Callable[[Any, float], Any]) -> list:
        out = super().run(now, fn)
        self.cluster._after(self, now, None)
        return out

    def on_reply(self, now: float, reply: Reply) -> None:
        self.cluster._replied(self, now, reply)


def _cap(core: NodeCore) -> tuple[float, int, int]:
    c = core.placement.ledger.capacity
    return c.cpus, c.memory, c.gpus


def detection_bound(swim: SwimConfig, n: int) -> float:
    """A generous bound on how long n nodes take to declare a crashed node dead and spread the
    news: a few probe periods, the longest suspicion, dissemination."""
    _lo, hi = swim.suspicion_bounds(n)
    return 4 * swim.probe_interval + hi + 10 * swim.gossip_interval


Watcher = Callable[["PlacementCluster", str, float, Any], bool]
"""watcher(cluster, addr, now, msg_or_None) after every call into a node; True = remove it."""


class PlacementCluster:
    """n placement nodes on one Simulator, bootstrapped, with checkers. See the module doc."""

    def __init__(
        self,
        n: int,
        seed: int,
        *,
        shape: NodeShape | Sequence[NodeShape] | Callable[[int], NodeShape] = NodeShape(),
        background: BackgroundTrace | Sequence[BackgroundTrace] | Callable[[int], BackgroundTrace]
        | None = None,
        placement: PlacementConfig = FAST_PLACEMENT,
        swim: SwimConfig = FAST_SWIM,
        forecaster: Any = None,
        network: NetworkModel | None = None,
        sample_step: float = 1.0,
        encode_messages: bool = False,
        streams: bool | StreamConfig = False,
    ) -> None:  # fmt: skip
        """`encode_messages`: every message goes through the wire codec (slower; a message
        that cannot be encoded is dropped, as a real agent would). `streams`: carry everything
        but failure detection on TCP-like streams, as real agents do (`NetworkModel.
        set_streams`; it is applied to `network` when given); False leaves `network` as it is."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self.seed = seed
        self.sim = Simulator(seed, network, encode_messages=encode_messages)
        if streams:
            self.sim.network.set_streams(streams)
        self.placement = placement
        self.swim = swim
        self.addrs = [f"sim://n{i}" for i in range(n)]
        self.ids = [node_id(a) for a in self.addrs]
        self.nodes: dict[str, CheckedNode] = {}
        self.retired: list[tuple[str, CheckedNode]] = []  # nodes replaced by a restart
        self.restarts: dict[str, int] = {}  # addr -> how many times it was restarted
        self._shape = shape
        self._background = background
        self._forecaster = forecaster
        self._sample_step = sample_step
        self.retired_sent = 0  # messages sent by the retired nodes
        self.requests: list[Request] = []
        self._by_req: dict[tuple[str, int], Request] = {}
        self._req = 0
        self.violations: list[Violation] = []
        self.watchers: list[Watcher] = []
        self.crashed: dict[str, float] = {}  # addr -> time
        self.events: list[tuple[float, str, str]] = []  # failures injected: (time, what, addr)
        self.scheduled_until = 0.0  # time of the last failure action scheduled so far
        cores = []
        for i, addr in enumerate(self.addrs):
            sh = _pick(shape, i)
            res = ResourceRecord(node_id(addr), 0, cpus=float(sh.cpus), memory=int(sh.memory),
                                 gpus=int(sh.gpus), labels=dict(sh.labels))  # fmt: skip
            core = NodeCore(node_id(addr), addr, random.Random(f"{seed}:{addr}"), swim, res,
                            placement, forecaster)  # fmt: skip
            self._install_ledger(addr, core)
            cores.append(core)
        # everybody already knows everybody, as after a completed join (bootstrap_swim_cluster)
        members = tuple(MemberUpdate(c.node_id, c.addr, 0, Status.ALIVE) for c in cores)
        records = tuple(c.membership.resources for c in cores)
        state = Message("bootstrap", "sim://bootstrap", 0, SyncReply(members, records))
        now = self.sim.now
        for i, (addr, core) in enumerate(zip(self.addrs, cores, strict=True)):
            core.join(now, [])
            core.membership.on_message(now, state)  # what it learnt is not part of the run
            bg = _pick(background, i) if background is not None else None
            ex = CheckedExecutor(_cap(core)[0], bg)
            node = CheckedNode(self, addr, core, ex, sample_step)
            self.nodes[addr] = node
            self.sim.add_node(addr, node)

    def _install_ledger(self, addr: str, core: NodeCore) -> None:
        p = core.placement
        c = p.ledger.capacity

        def report(what: str) -> None:
            self.violations.append(Violation(self.sim.now, addr, what))

        led = CheckedLedger(c.cpus, c.memory, c.gpus, report)
        p.ledger = led
        p.worker.ledger = led

    # ------------------------------------------------------------------ access

    def core(self, addr: str) -> NodeCore:
        return self.nodes[addr].core

    def cores(self) -> list[NodeCore]:
        return [n.core for n in self.nodes.values()]

    def addr_of(self, node: str) -> str:
        return f"sim://{node}"

    @property
    def now(self) -> float:
        return self.sim.now

    def up(self) -> list[str]:
        """Nodes not crashed (paused ones included: they will come back)."""
        return [a for a in self.addrs if self.sim.state(a) != "crashed"]

    def converged(self) -> bool:
        """Every running node sees exactly the running nodes as alive."""
        running = {node_id(a) for a in self.addrs if self.sim.is_up(a)}
        for a in self.addrs:
            if self.sim.is_up(a):
                m = self.core(a).membership
                alive = {n for n in running if m.status_of(n) == Status.ALIVE} | {node_id(a)}
                if alive != running or set(m.live_nodes()) - running:
                    return False
        return True

    def detection_time(self) -> float:
        """A generous bound on how long the cluster takes to declare a crashed node dead and
        spread the news: a few probe periods, the longest suspicion, dissemination."""
        return detection_bound(self.swim, len(self.addrs))

    # ------------------------------------------------------------------ running

    def run_for(self, dt: float) -> None:
        self.sim.run_for(dt)

    def run_until(self, t: float) -> None:
        self.sim.run_until(t)

    def settle(self, timeout: float = 120.0, linger: float = 2.0, step: float = 0.5) -> bool:
        """Run until every scheduled failure action (heal, resume...) has happened, every
        running node sees exactly the running nodes alive (a healed partition has merged), no
        submit is still unanswered and every accepted task is terminal on the surviving nodes,
        then `linger` more seconds for replication to finish. False if that took over
        `timeout`."""
        def done() -> bool:
            return (self.sim.now >= self.scheduled_until and self.converged()
                    and not self.unanswered() and not self.lost_tasks())  # fmt: skip

        ok = self.sim.run_until_true(done, timeout, step) is not None
        self.sim.run_for(linger)
        return ok

    # ------------------------------------------------------------------ client requests

    def _request(self, kind: str, at: float | None, via: str, task_id: str,
                 fn: Callable[[NodeCore, float, int], list[Effect]],
                 spec: TaskSpec | None = None) -> Request:  # fmt: skip
        self._req += 1  # request numbers are unique in the cluster (0 is the owners' own fetch)
        r = Request(kind, task_id, via, math.nan, self._req, spec)
        self.requests.append(r)
        self._by_req[(via, r.req)] = r

        def issue(sim: Simulator) -> None:
            r.at = sim.now
            sim.call(via, on_core(lambda core, now: fn(core, now, r.req)))

        if at is None or at <= self.sim.now:
            issue(self.sim)
        else:
            self.sim.schedule(at, issue)
        return r

    def submit(self, task_id: str, spec: TaskSpec, via: str | int = 0,
               at: float | None = None) -> Request:  # fmt: skip
        """Submit through node `via` (address or index) at time `at` (None = now)."""
        via = self._addr(via)
        return self._request("submit", at, via, task_id,
                             lambda c, now, req: c.submit(now, req, task_id, spec), spec)

    def cancel(self, task_id: str, via: str | int = 0, at: float | None = None) -> Request:
        via = self._addr(via)
        return self._request("cancel", at, via, task_id,
                             lambda c, now, req: c.cancel(now, req, task_id))

    def get(self, task_id: str, via: str | int = 0, at: float | None = None) -> Request:
        via = self._addr(via)
        return self._request("get", at, via, task_id, lambda c, now, req: c.get(now, req, task_id))

    def list_tasks(self, via: str | int = 0, state: int = -1, limit: int | None = None,
                   at: float | None = None) -> Request:  # fmt: skip
        """`agora tasks` through node `via`: the reply's data is the client's answer."""
        via = self._addr(via)
        extra = {} if limit is None else {"limit": limit}
        return self._request("list", at, via, "",
                             lambda c, now, req: c.list(now, req, state, **extra))

    def _addr(self, via: str | int) -> str:
        return self.addrs[via] if isinstance(via, int) else via

    def submits(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "submit"]

    def accepted(self) -> dict[str, TaskSpec]:
        """Tasks whose submit was acknowledged ok: task id -> spec."""
        return {r.task_id: r.spec for r in self.submits() if r.ok}

    def unanswered(self) -> list[Request]:
        """Submits (issued or still scheduled) not yet answered, through nodes not crashed."""
        return [r for r in self.submits()
                if r.reply is None and self.sim.state(r.via) != "crashed"]  # fmt: skip

    # ------------------------------------------------------------------ failures

    def _at(self, at: float | None, fn: Callable[[], None]) -> None:
        if at is None or at <= self.sim.now:
            fn()
        else:
            self.scheduled_until = max(self.scheduled_until, at)
            self.sim.schedule(at, lambda s: fn())

    def crash(self, addr: str | int, at: float | None = None) -> None:
        addr = self._addr(addr)

        def go() -> None:
            if self.sim.state(addr) == "crashed":
                return
            self.sim.crash(addr)
            self.crashed[addr] = self.sim.now
            self.events.append((self.sim.now, "crash", addr))

        self._at(at, go)

    def restart(self, addr: str | int, at: float | None = None,
                shape: NodeShape | None = None) -> None:  # fmt: skip
        """Start a crashed node again: same node id and address, a fresh core and executor (a
        process restarted after a crash keeps nothing) in a new generation, joining through a
        live node; `shape` to restart it with other resources."""
        addr = self._addr(addr)

        def go() -> None:
            if self.sim.state(addr) != "crashed":
                return
            i = self.addrs.index(addr)
            k = self.restarts.get(addr, 0) + 1
            self.restarts[addr] = k
            sh = shape or _pick(self._shape, i)
            res = ResourceRecord(node_id(addr), 0, cpus=float(sh.cpus), memory=int(sh.memory),
                                 gpus=int(sh.gpus), labels=dict(sh.labels))  # fmt: skip
            core = NodeCore(node_id(addr), addr, random.Random(f"{self.seed}:{addr}:{k}"),
                            self.swim, res, self.placement, self._forecaster,
                            generation=k)  # fmt: skip
            self._install_ledger(addr, core)
            bg = _pick(self._background, i) if self._background is not None else None
            node = CheckedNode(self, addr, core, CheckedExecutor(_cap(core)[0], bg),
                               self._sample_step, first_sample=self.sim.now)  # fmt: skip
            self.retired.append((addr, self.nodes[addr]))
            self.retired_sent += self.sim.node_stats(addr).sent
            self.nodes[addr] = node
            self.sim.add_node(addr, node)
            seeds = [a for a in self.addrs if a != addr and self.sim.is_up(a)][:3]
            self.sim.call(addr, on_core(lambda c, now: c.join(now, seeds)))
            self.crashed.pop(addr, None)
            self.events.append((self.sim.now, "restart", addr))

        self._at(at, go)

    def all_nodes(self) -> list[tuple[str, CheckedNode]]:
        """Every node that ever ran: the current ones and those replaced by restarts."""
        return [*self.retired, *self.nodes.items()]

    def crash_soon(self, addr: str | int) -> None:
        """Crash `addr` right after the event being handled (for watchers)."""
        addr = self._addr(addr)
        self.sim.schedule(self.sim.now, lambda s: self.crash(addr))

    def pause(self, addr: str | int, at: float | None = None) -> None:
        addr = self._addr(addr)

        def go() -> None:
            if self.sim.state(addr) == "live":
                self.sim.pause(addr)
                self.events.append((self.sim.now, "pause", addr))

        self._at(at, go)

    def resume(self, addr: str | int, at: float | None = None) -> None:
        addr = self._addr(addr)

        def go() -> None:
            if self.sim.state(addr) == "paused":
                self.events.append((self.sim.now, "resume", addr))
                self.sim.resume(addr)

        self._at(at, go)

    def partition(self, *groups: Iterable[str | int], at: float | None = None) -> None:
        gs = tuple(tuple(self._addr(a) for a in g) for g in groups)

        def go() -> None:
            self.sim.partition(*gs)
            self.events.append((self.sim.now, "partition", repr([len(g) for g in gs])))

        self._at(at, go)

    def heal(self, at: float | None = None) -> None:
        def go() -> None:
            self.sim.heal()
            self.events.append((self.sim.now, "heal", ""))

        self._at(at, go)

    def deafen(self, addr: str | int, at: float | None = None) -> None:
        """From `at`, the node takes nothing off its streams; its datagrams (failure
        detection) still pass (`NetworkModel.deafen`)."""
        addr = self._addr(addr)

        def go() -> None:
            self.sim.network.deafen(addr)
            self.events.append((self.sim.now, "deafen", addr))

        self._at(at, go)

    def watch(self, fn: Watcher) -> None:
        """Call fn(cluster, addr, now, msg) after every call into any node (msg None for ticks
        and scenario calls) until it returns True."""
        self.watchers.append(fn)

    def inject(self, to: str | int, sender: str | int, body: Any,
               at: float | None = None) -> None:  # fmt: skip
        """Deliver a raw message to `to` as if `sender` had sent it (a misbehaving peer)."""
        to, sender = self._addr(to), self._addr(sender)
        msg = Message(node_id(sender), sender, 0, body)
        self._at(at, lambda: self.sim.call(to, lambda n, now: n.on_message(now, msg)))

    # ------------------------------------------------------------------ per-event hook

    def _replied(self, node: CheckedNode, now: float, reply: Reply) -> None:
        r = self._by_req.get((node.addr, reply.req))
        if r is not None and r.reply is None:
            r.reply = (reply.ok, reply.data, reply.error)
            r.replied_at = now

    def _after(self, node: CheckedNode, now: float, msg: Any) -> None:
        self._check_node(node, now)
        if self.watchers:
            for w in list(self.watchers):
                if w(self, node.addr, now, msg):
                    self.watchers.remove(w)

    def _check_node(self, node: CheckedNode, now: float) -> None:
        led = node.core.placement.ledger
        ex = node.executor
        # what the checks read changes only when a lease or commitment is taken, given back
        # or expires, or a run starts or ends: after most events (gossip, probes) nothing did
        state = (led.changes, ex.started_count, ex.ended_count)
        if state == node.checked_state:
            return
        node.checked_state = state
        cap = led.capacity
        if led.over_committed():
            self.violations.append(Violation(now, node.addr, f"ledger uses {led.used()} of {cap}"))
        d = ex.running_demand()
        if d.cpus > cap.cpus + 1e-6 or d.memory > cap.memory or d.gpus > cap.gpus:
            self.violations.append(Violation(now, node.addr, f"running {d} on {cap}: "
                                             f"{ex.running()}"))  # fmt: skip
        for tid, att in ex.running():
            if not led.is_committed(("run", tid, att)):
                self.violations.append(Violation(now, node.addr,
                                                 f"run {tid}#{att} has no commitment"))

    # ------------------------------------------------------------------ observation

    def newest(self, task_id: str, addrs: Iterable[str] | None = None) -> TaskRecord | None:
        best = None
        for a in self.up() if addrs is None else addrs:
            r = self.core(a).placement.owner.store.records.get(task_id)
            if r is not None and newer(r, best):
                best = r
        return best

    def records(self) -> dict[str, TaskRecord]:
        """Newest copy of every record held by a node that did not crash."""
        out: dict[str, TaskRecord] = {}
        for a in self.up():
            for tid, r in self.core(a).placement.owner.store.records.items():
                if newer(r, out.get(tid)):
                    out[tid] = r
        return out

    def collected(self) -> dict[str, TaskState]:
        """Tasks whose records were collected after their retention (by a node that did not
        crash, and that no such node still holds): how they ended."""
        out: dict[str, TaskState] = {}
        for a in self.up():
            for tid, t in self.core(a).placement.owner.store.tombstones.items():
                out[tid] = t.state
        held = self.records()
        return {tid: st for tid, st in out.items() if tid not in held}

    def copies(self, task_id: str) -> dict[str, TaskRecord]:
        """Every node's copy of a record (crashed nodes included), for debugging."""
        out = {}
        for a in self.addrs:
            r = self.core(a).placement.owner.store.records.get(task_id)
            if r is not None:
                out[a] = r
        return out

    def commits(self) -> dict[str, list[tuple[str, int, str, TaskState]]]:
        """Every result ever committed, by task: (committing node, attempt, runner, state)."""
        out: dict[str, list] = {}
        for a, n in self.all_nodes():
            for tid, att, runner, st in n.core.placement.owner.committed_results:
                out.setdefault(tid, []).append((node_id(a), att, runner, st))
        return out

    def runs_of(self, task_id: str) -> list[tuple[str, int, float]]:
        """Every run started for the task: (node, attempt, start time)."""
        out = []
        for a, n in self.all_nodes():
            for t, tid, att in n.executor.starts:
                if tid == task_id:
                    out.append((node_id(a), att, t))
        return sorted(out, key=lambda x: x[2])

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self.cores():
            total.update(c.placement.stats)
        return total

    def ignored_counters(self) -> dict[str, int]:
        s = self.stats()
        return {k: s[k] for k in IGNORED_COUNTERS if s[k]}

    def states(self) -> Counter[str]:
        """How each accepted task stands (a collected one: how it ended)."""
        recs = self.records()
        gone = self.collected()
        return Counter(recs[t].state.label if t in recs else gone[t].label if t in gone
                       else "lost" for t in self.accepted())  # fmt: skip

    # ------------------------------------------------------------------ checkers

    def overcommit_violations(self) -> list[str]:
        return [str(v) for v in self.violations]

    def lost_tasks(self) -> list[str]:
        recs = self.records()
        gone = self.collected()
        out = []
        for tid in self.accepted():
            r = recs.get(tid)
            if r is None and tid in gone:
                continue  # it ended and its record was collected after the retention
            if r is None:
                out.append(f"{tid}: no surviving copy")
            elif not r.state.terminal:
                out.append(f"{tid}: still {r.state.label} (attempt {r.attempt} on {r.node!r}, "
                           f"v{r.version} by {r.writer})")  # fmt: skip
        return out

    def double_results(self) -> list[str]:
        out = []
        for tid, cs in self.commits().items():
            runs = {(att, runner) for _, att, runner, _ in cs}
            states = {(att, runner, st) for _, att, runner, st in cs}
            if len(runs) > 1 or len(states) > 1:
                out.append(f"{tid}: results committed {cs}")
        return out

    def replica_disagreements(self) -> list[str]:
        """Tasks with two live authorities for different results.

        For each task take the newest copy W held by a node that did not crash. Every live node
        of W's replica set must hold W's result. A live node may still hold an older, different
        terminal copy X (a replica dropped by a repair, or a lineage that lost a merge after a
        partition) only as an orphan: the first live node of X's own replica list (the node
        that would own X) must hold W's result, so X is corrected as soon as anyone takes it
        over and no lookup prefers it. See `stale_copies` for the orphans themselves."""
        out = []
        up = set(self.up())
        for tid, w in self.records().items():
            if not w.state.terminal:
                continue
            result = _result(w)
            by = {}
            for n in w.replicas:
                a = self.addr_of(n)
                if a in up:
                    r = self.core(a).placement.owner.store.records.get(tid)
                    if r is None or _result(r) != result:
                        by[n] = _result(r) if r else None
            for a in up:
                x = self.core(a).placement.owner.store.records.get(tid)
                if x is None or not x.state.terminal or _result(x) == result:
                    continue
                owner = next((n for n in x.replicas if self.addr_of(n) in up), node_id(a))
                o = self.core(self.addr_of(owner)).placement.owner.store.records.get(tid)
                if o is None or _result(o) != result:
                    by[node_id(a)] = f"{_result(x)}, owned by {owner}"
            if by:
                out.append(f"{tid}: result {result} in {w.replicas}, but {by}")
        return out

    def stale_copies(self) -> dict[str, list[str]]:
        """Live nodes holding an older terminal result than the newest copy (orphans)."""
        out: dict[str, list[str]] = {}
        recs = self.records()
        for a in self.up():
            for tid, x in self.core(a).placement.owner.store.records.items():
                w = recs[tid]
                if x.state.terminal and w.state.terminal and _result(x) != _result(w):
                    out.setdefault(tid, []).append(node_id(a))
        return out

    def result_mismatches(self) -> list[str]:
        out = []
        ends: dict[tuple[str, str, int], list[Any]] = {}
        for a, n in self.all_nodes():
            for e in n.executor.ended:
                ends.setdefault((node_id(a), e.exit.task_id, e.exit.attempt), []).append(e)
        for tid, r in self.records().items():
            if r.state not in (TaskState.SUCCEEDED, TaskState.FAILED):
                continue
            es = ends.get((r.node, tid, r.attempt), [])
            if not es:
                out.append(f"{tid}: recorded {r.state.label} for attempt {r.attempt} on "
                           f"{r.node}, which never ended a run of it")  # fmt: skip
            elif not any(e.exit.state == r.state and e.exit.exit_code == r.exit_code
                         for e in es):  # fmt: skip
                out.append(f"{tid}: recorded {r.state.label}/{r.exit_code}, the run ended "
                           + ", ".join(f"{e.exit.state.label}/{e.exit.exit_code}" for e in es))
        return out

    def repeated_attempts(self) -> list[str]:
        """The same attempt of a task started more than once on one node (a wasted re-run:
        allowed by at-least-once execution, but nothing in the protocol should cause it)."""
        seen = Counter((node_id(a), tid, att) for a, n in self.all_nodes()
                       for _, tid, att in n.executor.starts)  # fmt: skip
        return [f"{tid}: attempt {att} started {k} times on {node}"
                for (node, tid, att), k in seen.items() if k > 1]  # fmt: skip

    def broken_cancels(self) -> list[str]:
        """Cancels answered ok whose task did not end cancelled (the client was misled)."""
        recs = self.records()
        out = []
        for r in self.requests:
            if r.kind == "cancel" and r.ok:
                rec = recs.get(r.task_id)
                if rec is None or rec.state != TaskState.CANCELLED:
                    out.append(f"{r.task_id}: cancel answered ok at {r.replied_at:.3f} but the "
                               f"task ended {rec.state.label if rec else 'lost'}")
        return out

    def problems(self) -> dict[str, list[str]]:
        """Every checker's findings (only the non-empty ones)."""
        found = {
            "overcommit": self.overcommit_violations(),
            "lost": self.lost_tasks(),
            "double_results": self.double_results(),
            "replica_disagreements": self.replica_disagreements(),
            "result_mismatches": self.result_mismatches(),
            "broken_cancels": self.broken_cancels(),
            "repeated_attempts": self.repeated_attempts(),
        }
        return {k: v for k, v in found.items() if v}

    def describe(self, task_id: str) -> str:
        """Everything known about one task, for assertion messages."""
        lines = [f"task {task_id}: runs {self.runs_of(task_id)}",
                 f"  commits {self.commits().get(task_id)}"]  # fmt: skip
        for a, r in self.copies(task_id).items():
            lines.append(
                f"  {a} [{self.sim.state(a)}]: {r.state.label} v{r.version} w={r.writer} "
                f"att={r.attempt} node={r.node} replicas={r.replicas} reason={r.reason!r}"
            )
        lines.append(f"  failures: {self.events}")
        return "\n".join(lines)


def _result(r: TaskRecord) -> tuple:
    return (r.state.label, r.attempt, r.node, r.exit_code)


def _pick(x: Any, i: int) -> Any:
    if callable(x) and not isinstance(x, NodeShape | BackgroundTrace):
        return x(i)
    if isinstance(x, list | tuple):
        return x[i % len(x)]
    return x


__all__ = [
    "FAST_PLACEMENT", "FAST_SWIM", "GiB", "IGNORED_COUNTERS", "CheckedExecutor", "CheckedLedger",
    "CheckedNode", "NodeShape", "PlacementCluster", "Request", "Violation", "detection_bound",
    "task_spec",
]  # fmt: skip
