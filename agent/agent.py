"""The agent: the real (asyncio + ZeroMQ + wall clock) shell around one node's cores.

It owns one `Transport` (ZeroMQ), one `NodeCore` (membership + placement) and one task
`Executor`, and does only I/O around the core:

- receive loop: decode every frame (`WireError` ⇒ counted by reason and dropped; any other
  exception while decoding or handling one message is caught, counted and logged at debug — the
  loop never dies), answer client `Query` messages (``members``, ``stats``, ``set_labels``,
  ``logs`` at once; ``submit``, ``status``, ``tasks``, ``cancel`` once the core has its answer
  from the cluster: the client's identity is held until then), hand everything else to the core;
- tick timer: call `core.on_tick` when `core.next_wakeup()` is due (one event-loop timer, moved
  earlier when something the core handled brings its next wakeup forward);
- load loop: sample this machine's load every `load_interval` and feed it to the placement core,
  which keeps the forecast and decides when load, forecast and allocation are worth gossiping;
- executor: runs the tasks the core awards to this node and reports how they ended;
- carry out every effect the core returns, in its order (`agent.effects`): send each message
  (an encode error is counted, never raised), reset a suspected peer's stream, start and stop
  runs, answer clients, log member status changes;
- join: with seeds, stop with `JoinError` if no seed answers within `join_timeout`;
- `request_stop()` (wired to SIGTERM/SIGINT by `run_agent`): graceful leave, keep driving the
  core for `swim.leave_linger` seconds so peers learn "left", then close;
- `crash()`: stop at once and close the sockets without a word to anyone, as a crash would.

For scenario runs (testing only) an agent can also:

- write a JSON-lines event log (`event_log`, see `agent.event_log`): start, member status
  changes, runs started and ended, results committed, load samples, stop — what invariant
  checkers read instead of the agent's memory;
- inject faults into its own outgoing protocol messages (`fault_rules`: a JSON file polled
  every `FAULT_POLL_INTERVAL`, see `gossip.faults`);
- replay a recorded machine's load instead of measuring this one (`replay`, see
  `agent.resources.ReplayLoadSampler`), so many agents on one machine each see a real load.

`Agent.run()` installs no signal handlers and touches nothing process-wide, so several agents
(each with its own transport and core) can run as tasks of one event loop: `deploy/ray_launcher.py`
hosts many agents per process that way. `run_agent` is the one-agent-per-process entry point.

The clock is `time.time()`: task records carry timestamps that clients on other machines show,
so they must be wall-clock times (a clock step makes one probe or lease end early or late).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import os
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, assert_never

from agent.access import ANYONE, owns, refusal, visible_row
from agent.effects import Effect, Reply
from agent.event_log import EventLog
from agent.execution import StartTask, StopTask, TaskExit
from agent.executor import HISTORY, Executor
from agent.forecast_tracker import check_forecaster, make_forecaster
from agent.messages import MAX_LIST_RECORDS
from agent.node import NodeCore
from agent.placement_config import PlacementConfig
from agent.records import spec_from_args
from agent.resources import (
    Capacity,
    LoadSampler,
    LoadSource,
    ReplayLoadSampler,
    ReplayTrace,
)
from agent.tasks import TaskState
from gossip.auth import (
    CLIENT_PREFIX,
    KeyFileError,
    Keyring,
    Principal,
    Verifier,
    key_id,
    node_curve_keys,
)
from gossip.config import SwimConfig
from gossip.effects import Outgoing, ResetStream, StatusChange
from gossip.faults import FaultyTransport, RulesFile
from gossip.fields import MAX_ID_LEN, MAX_LABELS
from gossip.kinds import rides_datagram
from gossip.membership import MemberView
from gossip.messages import Gossip, GossipOnly, Message, Query, QueryReply, ResourceRecord, Status
from gossip.transport import Identity, Transport, TransportConfig, ZmqTransport
from gossip.wire import WireError, decode, encode

log = logging.getLogger(__name__)

FAULT_POLL_INTERVAL = 0.2  # how often the fault rules file is checked for changes
DEFERRED_QUERIES = ("submit", "status", "tasks", "cancel")

_FORECASTERS: dict[str, Any] = {}  # loaded once per process, shared by every agent in it


def load_forecaster(kind: str) -> Any:
    """The forecaster placement uses (`agent.forecast_tracker.KINDS`): the shipped
    meta-learned peak forecaster (numpy, no torch) adapted on this node (`meta`), its
    unadapted meta-initialization (`meta-init`), the last-value ablation, or none. Raises
    AgentError for an unknown kind or if the shipped file cannot be read."""
    if kind == "none":
        return None
    if kind not in _FORECASTERS:
        from metalearn.errors import ForecastError

        try:
            _FORECASTERS[kind] = make_forecaster(kind)
        except ForecastError as e:
            raise AgentError(f"cannot load the forecaster: {e}") from None
        except ValueError as e:
            raise AgentError(str(e)) from None
    return _FORECASTERS[kind]


def check_forecast_config(forecaster: Any, placement: PlacementConfig) -> None:
    """AgentError (one line) unless the forecaster predicts what placement gossips."""
    if forecaster is None:
        return
    try:
        check_forecaster(forecaster, placement.forecast_horizons, placement.forecast_quantile)
    except ValueError as e:
        raise AgentError(f"placement: {e}") from None
    window = forecaster.spec.window
    if placement.forecast_history < window:
        raise AgentError(f"placement.forecast_history ({placement.forecast_history}) must hold "
                         f"at least the forecaster's window ({window} steps)")


GENERATION_EPOCH = 1_577_836_800.0  # 2020-01-01 UTC


def start_generation() -> int:
    """This process's generation: milliseconds since 2020 at start. A restarted agent (same node
    id) thereby outranks its previous life at once, and peers treat it as a restart. Holds as
    long as the clock does not step back across a restart."""
    return int((time.time() - GENERATION_EPOCH) * 1000)


MAX_SUBMITTERS_KEPT = 4 * HISTORY  # who submitted the runs whose logs are still kept here
KEYS_POLL_INTERVAL = 1.0  # seconds between looks at the cluster key file (rotations)
MAX_TICK_SLEEP = 5.0  # seconds: the timer fires at least this often (a wall-clock step heals)
TICK_ERROR_PAUSE = 0.05  # seconds: after a failing tick, so a broken core is never spun on
RECV_BATCH = 32  # messages handled before the receive loop yields to the others
REFUSAL_LOG_EVERY = 10.0  # seconds: refused messages are counted always, logged this often


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _visible(principal: Principal, data: Any) -> Any:
    """A request's answer as `principal` may see it (task rows of others redacted)."""
    if principal.role == "admin" or not isinstance(data, dict):
        return data
    if "tasks" in data and isinstance(data["tasks"], list):
        return {**data, "tasks": [visible_row(principal, r) for r in data["tasks"]]}
    if "submitter" in data:
        return visible_row(principal, data)
    return data


class AgentError(Exception):
    """The agent cannot run or had to stop (the message is for a human)."""


class JoinError(AgentError):
    pass


@dataclass(slots=True)
class AgentOptions:
    node_id: str
    bind: str  # the endpoint the ROUTER binds, e.g. tcp://0.0.0.0:7946
    advertise: str  # the endpoint peers use to reach this agent
    capacity: Capacity
    seeds: list[str] = field(default_factory=list)
    swim: SwimConfig = field(default_factory=SwimConfig)
    join_timeout: float = 10.0
    load_interval: float = 1.0
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    forecaster: str = "meta"  # meta (shipped, adapted) | meta-init | last-value | none
    transport: TransportConfig = field(default_factory=TransportConfig)
    event_log: str = ""  # path of a JSON-lines event log to append to; "" = none
    fault_rules: str = ""  # path of a fault rules JSON file (testing only); "" = no faults
    replay: ReplayTrace | None = None  # replay this trace as background load instead of psutil
    generation: int | None = None  # None: from the start time (see `start_generation`)
    cluster_key: str = ""  # path of the cluster keyring; "" = plain (unauthenticated) traffic


def member_row(m: MemberView, now: float) -> dict[str, Any]:
    """One member as a plain (msgpack- and JSON-friendly) dict, as `members` queries return it."""
    r = m.resources
    heard = None if m.last_heard is None else round(max(0.0, now - m.last_heard), 3)
    return {
        "node": m.node,
        "addr": m.addr,
        "status": Status(m.status).label,
        "incarnation": m.incarnation,
        "version": r.version if r else None,
        "cpus": r.cpus if r else None,
        "memory": r.memory if r else None,
        "gpus": r.gpus if r else None,
        "labels": dict(r.labels) if r else {},
        "alloc": (
            {"cpus": r.alloc_cpus, "memory": r.alloc_memory, "gpus": r.alloc_gpus} if r else None
        ),
        "load": r.load if r else None,
        "mem_load": r.mem_load if r else None,
        "forecast": list(r.forecast) if r else [],
        "last_heard_s_ago": heard,
    }


class Agent:
    def __init__(
        self, options: AgentOptions, transport: Transport, rng: Any = None,
        sampler: LoadSource | None = None, keyring: Keyring | None = None,
    ) -> None:  # fmt: skip
        """`sampler`: where load samples come from (agents of one process may share one);
        default: the configured replay, else psutil. `keyring`: the cluster keys the
        transport was bound with; every message must then come from a key they derive."""
        self.opts = options
        self.transport: Transport = transport
        self.verifier = Verifier(keyring) if keyring is not None else None
        self._keys_mtime = _mtime(options.cluster_key) if keyring is not None else None
        self._rules_file: RulesFile | None = None
        self._faulty: FaultyTransport | None = None
        if options.fault_rules:  # wrap first, so faults apply from the very first message
            self._rules_file = RulesFile(options.fault_rules)
            self._faulty = FaultyTransport(transport, random.Random())
            self._poll_fault_rules()
            self.transport = self._faulty
        self.node_id = options.node_id
        c = options.capacity
        resources = ResourceRecord(
            node=options.node_id, version=0, cpus=c.cpus, memory=c.memory, gpus=c.gpus,
            labels=dict(c.labels),
        )  # fmt: skip
        self.generation = options.generation if options.generation is not None else (
            start_generation())
        forecaster = load_forecaster(options.forecaster)
        check_forecast_config(forecaster, options.placement)
        self.node = NodeCore(
            options.node_id, options.advertise, rng or random.Random(), options.swim, resources,
            options.placement, forecaster, self.generation,
        )  # fmt: skip
        self.core = self.node.membership
        self.executor = Executor(self._on_task_exit)
        self._closed = False
        # core request -> (client, its seq, who asked)
        self._clients: dict[int, tuple[Identity, int, Principal]] = {}
        self.refused: collections.Counter[str] = collections.Counter()  # messages, by reason
        self._refusal_logged: dict[str, float] = {}  # reason -> when it was last logged
        self._submitters: dict[str, str] = {}  # task id -> submitter, of runs started here
        self._next_req = 1
        self.counters: collections.Counter[str] = collections.Counter()
        self.sent_kinds: collections.Counter[str] = collections.Counter()  # messages, by kind
        self.dropped: collections.Counter[str] = collections.Counter()  # by WireError reason
        self._runs: dict[tuple[str, int], float] = {}  # runs started here -> their cpus
        if sampler is None and options.replay is not None:
            sampler = ReplayLoadSampler.from_trace(options.replay, c.cpus, self.running_cpus)
        self._sampler: LoadSource | None = sampler
        self.events: EventLog | None = None  # opened by run()
        # the tick timer: when it fires (wall clock), and its handle; none outside `run()`
        self._tick_due = math.inf
        self._tick_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = asyncio.Event()
        self._crashed = asyncio.Event()
        self._statuses: dict[str, Status] = {}
        self._seq = 0

    @classmethod
    def start(cls, options: AgentOptions) -> Agent:
        """Bind the transport (raises `gossip.transport.BindError`, `gossip.auth.KeyFileError`)
        and build the agent."""
        if not options.cluster_key:
            log.warning("running WITHOUT keys: anyone who can reach %s can join this cluster "
                        "and run commands here (use --cluster-key; see docs/security.md)",
                        options.bind)  # fmt: skip
            return cls(options, ZmqTransport.bind(options.bind, options.transport))
        ring = Keyring.load(options.cluster_key)
        keys = node_curve_keys(ring, options.node_id)
        transport = ZmqTransport.bind(options.bind, options.transport, keys)
        log.info("traffic authenticated and encrypted (CURVE) with cluster key %s",
                 key_id(ring.primary))  # fmt: skip
        return cls(options, transport, keyring=ring)

    # ------------------------------------------------------------------ driving the core

    @staticmethod
    def now() -> float:
        return time.time()

    def _apply(self, effects: Iterable[Effect]) -> None:
        """Carry out what the core decided, in the order it decided it."""
        for e in effects:
            match e:
                case Outgoing(addr, msg):
                    self._send(addr, msg)
                case ResetStream(addr):  # the core puts these before what it sends to the peer
                    self.transport.reset_peer(addr)
                case StartTask():
                    self._start_run(e)
                case StopTask(task_id, attempt):
                    self.executor.stop(task_id, attempt)
                case Reply():
                    self._answer_client(e)
                case StatusChange():
                    self._log_status(e)
                case _:
                    assert_never(e)
        self._log_commits()
        self._arm_tick()  # the core's next wakeup may have moved

    def _arm_tick(self, due: float | None = None) -> None:
        """Have the tick timer fire by the core's next wakeup (or `due`). Only ever moved
        earlier: a tick that comes too soon does nothing and arms the timer again. One timer
        instead of a loop woken by an event after every message: an idle agent's event loop
        turned over three times per tick it ran, most of its CPU (issue 10)."""
        if self._loop is None or self._closed:
            return
        now = self.now()
        if due is None:
            due = self.node.next_wakeup()
        due = min(due, now + MAX_TICK_SLEEP)
        if due >= self._tick_due:
            return
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        self._tick_due = due
        self._tick_timer = self._loop.call_later(max(0.0, due - now), self._tick)

    def _tick(self) -> None:
        """The timer's callback: one `on_tick`, whose effects arm the timer again."""
        self._tick_timer, self._tick_due = None, math.inf
        try:
            self._apply(self.node.on_tick(self.now()))
        except Exception as e:
            self.counters["tick_errors"] += 1
            log.debug("on_tick failed: %r", e, exc_info=True)
            self._arm_tick(self.now() + TICK_ERROR_PAUSE)

    def _send(self, addr: str, msg: Message) -> None:
        try:
            payload = encode(msg)
        except Exception as e:  # WireError("oversized") or a bug in a core's message
            self.counters["encode_errors"] += 1
            log.debug("cannot encode %s to %s: %s", type(msg.body).__name__, addr, e)
            return
        self.sent_kinds[type(msg.body).__name__] += 1
        if rides_datagram(msg.body):
            self._send_datagram(addr, msg, payload)
        else:
            self.transport.send(addr, payload)

    def _send_datagram(self, addr: str, msg: Message, payload: bytes) -> None:
        """One datagram; if it is too big, the probe alone as one and its piggybacked gossip
        on the stream (only the probe's timing matters); failing that, all on the stream."""
        if self.transport.send_datagram(addr, payload):
            return
        gossip = getattr(msg.body, "gossip", None)
        if gossip and not isinstance(msg.body, GossipOnly):
            bare = dataclasses.replace(msg, body=dataclasses.replace(msg.body, gossip=Gossip()))
            if self.transport.send_datagram(addr, encode(bare)):
                self.counters["gossip_split"] += 1
                self.transport.send(addr, encode(dataclasses.replace(
                    msg, seq=0, body=GossipOnly(gossip))))  # fmt: skip
                return
        self.transport.send(addr, payload)

    def _answer_client(self, r: Reply) -> None:
        client = self._clients.pop(r.req, None)
        if client is not None:
            ident, seq, principal = client
            self._reply(ident, seq, QueryReply(ok=r.ok, data=_visible(principal, r.data),
                                               error=r.error))  # fmt: skip

    def _log_status(self, c: StatusChange) -> None:
        """Log a member's status change (and write it to the event log, at the core's time)."""
        if c.node == self.node_id:
            return
        st = Status(c.status)
        old = self._statuses.get(c.node)
        m = self.core.member(c.node)
        addr = m.addr if m else "?"
        if old is None:
            log.info("member %s (%s) is %s [incarnation %d]", c.node, addr, st.label,
                     c.incarnation)  # fmt: skip
        elif old != st:
            log.info("member %s (%s): %s -> %s [incarnation %d]", c.node, addr, old.label,
                     st.label, c.incarnation)  # fmt: skip
        if old != st:
            self._event("member", t=c.time, peer=c.node, status=st.label, inc=c.incarnation)
        self._statuses[c.node] = st

    def _start_run(self, action: StartTask) -> None:
        key = (action.task_id, action.attempt)
        self.executor.start(action)
        if key not in self._runs and key in self.executor.running():  # really started now
            spec = action.spec
            self._runs[key] = spec.cpus
            self._submitters[key[0]] = spec.submitter
            while len(self._submitters) > MAX_SUBMITTERS_KEPT:  # as long as logs are kept
                self._submitters.pop(next(iter(self._submitters)))
            self._event("run_start", task=key[0], attempt=key[1], cpus=spec.cpus,
                        memory=spec.memory, gpus=spec.gpus)  # fmt: skip

    def running_cpus(self) -> float:
        """CPUs reserved by the runs this agent's executor is running now."""
        return float(sum(self._runs.values()))

    def _event(self, ev: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.write(ev, **fields)

    def _log_commits(self) -> None:
        """One ``commit`` event per new result the owner recorded on every live replica.

        The owner appends each result to a list (the simulator's checkers read it whole); a
        real agent hands them on and empties it, or it would grow by one entry per task."""
        results = self.node.placement.owner.committed_results
        for tid, attempt, runner, state in results:
            self._event("commit", task=tid, attempt=attempt, runner=runner,
                        state=TaskState(state).label)  # fmt: skip
        results.clear()

    def _on_task_exit(self, e: TaskExit) -> None:
        if self._runs.pop((e.task_id, e.attempt), None) is not None:  # also at shutdown/crash
            self._event("run_end", task=e.task_id, attempt=e.attempt, state=e.state.label,
                        exit_code=e.exit_code)  # fmt: skip
        if self._crashed.is_set() or self._closed:
            return  # a crashed node tells no one; a closed one has no sockets
        try:
            self._apply(self.node.on_task_exit(self.now(), e))
        except Exception as err:
            self.counters["handler_errors"] += 1
            log.debug("on_task_exit failed: %r", err, exc_info=True)

    def handle_datagram(self, payload: bytes, key: str = "") -> None:
        """A datagram opened by the transport (`key`: the key it was sealed with). Only what
        rides datagrams is taken from one: it has no connection to answer a query on."""
        self.counters["datagrams"] += 1
        self.handle_frame((), payload, key, datagram=True)

    def handle_frame(self, ident: Identity, payload: bytes, key: str = "",
                     datagram: bool = False) -> None:  # fmt: skip
        """Everything that happens for one received frame. Never raises.

        `key` is the CURVE key of the connection the frame came on ("" on a plain cluster),
        or the key a datagram was sealed with.
        """
        try:
            msg = decode(payload)
        except WireError as e:
            self.dropped[e.reason] += 1
            log.debug("dropped %s message: %s", e.reason, e)
            return
        except Exception as e:  # decode must only raise WireError; be safe anyway
            self.dropped["decode_error"] += 1
            log.debug("decoder failed: %r", e)
            return
        if datagram and not rides_datagram(msg.body):
            self.dropped["not_a_datagram_kind"] += 1
            return
        principal = self._principal(msg, key)
        if principal is None:
            return
        try:
            if isinstance(msg.body, Query):
                self.counters["queries"] += 1
                self._answer(ident, msg, principal)
            elif not principal.is_node:
                self._refuse("client_not_node", msg, f"a client may not send {msg.kind.name}")
            elif isinstance(msg.body, QueryReply):
                self.dropped["unexpected_reply"] += 1
            else:
                self.counters["messages"] += 1
                self._apply(self.node.on_message(self.now(), msg))
        except Exception as e:
            self.counters["handler_errors"] += 1
            log.debug("error handling %s from %r: %r", msg.kind.name, msg.sender, e, exc_info=True)

    def _principal(self, msg: Message, key: str) -> Principal | None:
        """Who sent `msg`, as its connection's key proves; None (counted, logged) if nobody."""
        if self.verifier is None:
            is_node = not msg.sender.startswith(CLIENT_PREFIX)
            return Principal(msg.sender, "admin", is_node) if is_node else ANYONE
        principal = self.verifier.principal(msg.sender, key)
        if principal is None:
            self._refuse("unauthenticated", msg, "its key is not the one derived for that sender")
        return principal

    def _refuse(self, reason: str, msg: Message, why: str) -> None:
        """Count a refused message; log it, at most once per reason every REFUSAL_LOG_EVERY s
        (a flood must not turn into a flood of log lines)."""
        self.refused[reason] += 1
        now = time.monotonic()
        if now - self._refusal_logged.get(reason, -REFUSAL_LOG_EVERY) < REFUSAL_LOG_EVERY:
            return
        self._refusal_logged[reason] = now
        log.warning("refused %s from %r (%s): %s [%d refused so far]", msg.kind.name,
                    msg.sender, msg.sender_addr or "no address", why,
                    self.refused[reason])  # fmt: skip

    def _answer(self, ident: Identity, msg: Message, principal: Principal = ANYONE) -> None:
        q = msg.body
        assert isinstance(q, Query)
        problem = refusal(principal, q.what)
        if problem:
            self._refuse("role", msg, problem)
            self._reply(ident, msg.seq, QueryReply(ok=False, error=problem))
            return
        if q.what == "members":
            rep = QueryReply(ok=True, data=self.member_rows())
        elif q.what == "stats":
            rep = QueryReply(ok=True, data=self.stats())
        elif q.what == "set_labels":
            rep = self._set_labels(q.args)
        elif q.what == "logs":
            rep = self._logs(q.args, principal)
        elif q.what in DEFERRED_QUERIES:
            problem = self._start_request(ident, msg.seq, q, principal)
            if not problem:
                return  # answered when the core has the cluster's answer
            rep = QueryReply(ok=False, error=problem)
        else:
            known = ", ".join(["members", "stats", "set_labels", "logs", *DEFERRED_QUERIES])
            rep = QueryReply(ok=False, error=f"unknown query {q.what!r} (known: {known})")
        self._reply(ident, msg.seq, rep)

    def _reply(self, ident: Identity, seq: int, rep: QueryReply) -> None:
        out = Message(self.node_id, self.opts.advertise, seq, rep)
        try:
            payload = encode(out)
        except WireError as e:
            self.counters["encode_errors"] += 1
            rep = QueryReply(ok=False, error=f"reply not sendable: {e}")
            payload = encode(Message(self.node_id, self.opts.advertise, seq, rep))
        self.transport.reply(ident, payload)

    def _start_request(self, ident: Identity, seq: int, q: Query, principal: Principal) -> str:
        """Hand a client request to the core; returns an error text if the request is bad."""
        args = q.args
        req = self._next_req
        self._next_req += 1
        now = self.now()
        if q.what == "tasks":
            state = args.get("state", "") or ""
            if not isinstance(state, str):
                return "state must be a string"
            if state:
                try:
                    code = int(TaskState[state.upper()])
                except KeyError:
                    names = ", ".join(s.label for s in TaskState)
                    return f"unknown state {state!r} (known: {names})"
            else:
                code = -1
            limit = args.get("limit", MAX_LIST_RECORDS)
            if type(limit) is not int or not 1 <= limit <= MAX_LIST_RECORDS:
                return f"limit must be a whole number from 1 to {MAX_LIST_RECORDS}"
            self._clients[req] = (ident, seq, principal)
            self._apply(self.node.list(now, req, code, limit))
            return ""
        task_id = args.get("id")
        if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_ID_LEN:
            return f"{q.what} needs a task id (a non-empty string of at most {MAX_ID_LEN} chars)"
        if q.what == "submit":
            spec, problem = spec_from_args(args.get("spec"))
            if spec is None:
                return problem
            # a client's own name; nobody's (not capped per client) for agents and plain clusters
            spec = dataclasses.replace(spec, submitter="" if principal.is_node else principal.name)
            self._clients[req] = (ident, seq, principal)
            self._apply(self.node.submit(now, req, task_id, spec))
        elif q.what == "status":
            self._clients[req] = (ident, seq, principal)
            self._apply(self.node.get(now, req, task_id))
        else:  # cancel
            self._clients[req] = (ident, seq, principal)
            by = None if principal.role == "admin" else principal.name
            self._apply(self.node.cancel(now, req, task_id, by))
        return ""

    def _logs(self, args: dict[str, Any], principal: Principal = ANYONE) -> QueryReply:
        task_id = args.get("id")
        if not isinstance(task_id, str) or not task_id:
            return QueryReply(ok=False, error="logs needs a task id")
        if not owns(principal, self._submitters.get(task_id, "")):
            return QueryReply(ok=False, error=f"task {task_id!r} was not submitted by "
                                              f"{principal.name!r}")  # fmt: skip
        tails = self.executor.tails(task_id)
        if tails is None:
            return QueryReply(ok=False, error=f"task {task_id!r} has no run on {self.node_id}")
        running = any(tid == task_id for tid, _ in self.executor.running())
        return QueryReply(ok=True, data={"stdout": tails[0], "stderr": tails[1],
                                         "running": running, "node": self.node_id})  # fmt: skip

    def _set_labels(self, args: dict[str, Any]) -> QueryReply:
        """Merge ``args["labels"]`` into this node's labels and publish a new record version."""
        labels = args.get("labels")
        if not isinstance(labels, dict) or not labels:
            return QueryReply(ok=False, error="set_labels needs a non-empty labels table")
        for k, v in labels.items():
            if not isinstance(k, str) or not k or len(k) > MAX_ID_LEN:
                return QueryReply(ok=False, error=f"bad label key {k!r}")
            if not isinstance(v, str) or len(v) > MAX_ID_LEN:
                return QueryReply(ok=False, error=f"bad value for label {k!r}: {v!r}")
        merged = {**self.core.resources.labels, **labels}
        if len(merged) > MAX_LABELS:
            return QueryReply(ok=False, error=f"too many labels ({len(merged)} > {MAX_LABELS})")
        self.core.update_resources(self.now(), labels=merged)
        self._arm_tick()
        rec = self.core.resources
        log.info("labels set: %s (record version %d)",
                 ", ".join(f"{k}={v}" for k, v in sorted(labels.items())), rec.version)  # fmt: skip
        return QueryReply(ok=True, data={"node": self.node_id, "version": rec.version,
                                         "labels": dict(rec.labels)})  # fmt: skip

    def member_rows(self) -> list[dict[str, Any]]:
        now = self.now()
        return [member_row(m, now) for m in sorted(self.core.members(), key=lambda m: m.node)]

    def stats(self) -> dict[str, Any]:
        agent = dict(self.counters)
        if self.events is not None and self.events.errors:
            agent["event_log_errors"] = self.events.errors
        if self._rules_file is not None and self._rules_file.errors:
            agent["fault_rules_errors"] = self._rules_file.errors
        return {
            "node": self.node_id,
            "core": dict(self.core.stats),
            "placement": dict(self.node.placement.stats),
            "running": len(self.executor.running()),
            "transport": dict(self.transport.stats),
            "agent": agent,
            "sent_by_kind": dict(self.sent_kinds),
            "dropped": dict(self.dropped),
            "refused": dict(self.refused),
            "keys": self.verifier.ring.ids() if self.verifier is not None else [],
            "dropped_total": sum(self.dropped.values()),
            "peers": self.transport.peer_count,
        }

    # ------------------------------------------------------------------ loops

    async def _recv_loop(self) -> None:
        received = 0
        while True:
            received += 1
            if received % RECV_BATCH == 0:
                # a ready ZeroMQ receive completes without suspending: under a flood this loop
                # never gave the event loop back, and probing, timers and ZAP starved
                await asyncio.sleep(0)
            try:
                ident, payload, key = await self.transport.recv()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a closed socket during shutdown, or a zmq hiccup
                self.counters["recv_errors"] += 1
                log.debug("receive failed: %r", e)
                await asyncio.sleep(0.01)
                continue
            self.handle_frame(ident, payload, key)

    async def _load_loop(self) -> None:
        if self._sampler is None:
            self._sampler = LoadSampler()
        while True:
            await asyncio.sleep(self.opts.load_interval)
            try:
                s = self._sampler.sample()
                self.node.observe_load(self.now(), s.load)
                self._arm_tick()
                self._event("load", load=round(s.load, 6), tasks_cpus=self.running_cpus())
            except Exception as e:
                self.counters["load_errors"] += 1
                log.debug("load sampling failed: %r", e, exc_info=True)

    async def _keys_loop(self) -> None:
        while True:
            await asyncio.sleep(KEYS_POLL_INTERVAL)
            self.reload_keys()

    def reload_keys(self) -> None:
        """Take up an edited key file (a rotation step); a bad file keeps the keys in use."""
        if self.verifier is None:
            return
        mtime = _mtime(self.opts.cluster_key)
        if mtime == self._keys_mtime:
            return
        self._keys_mtime = mtime
        try:
            ring = Keyring.load(self.opts.cluster_key)
        except KeyFileError as e:
            self.counters["key_reload_errors"] += 1
            log.error("keeping the keys in use: %s", e)
            return
        if ring == self.verifier.ring:
            return
        set_keys = getattr(self.transport, "set_keys", None)
        if set_keys is None:
            log.error("this transport cannot change keys; restart the agent to use them")
            return
        set_keys(node_curve_keys(ring, self.node_id))
        self.verifier = Verifier(ring)
        self.counters["key_reloads"] += 1
        log.info("cluster keys now %s (primary first)", ", ".join(ring.ids()))

    async def _faults_loop(self) -> None:
        while True:
            await asyncio.sleep(FAULT_POLL_INTERVAL)
            self._poll_fault_rules()

    def _poll_fault_rules(self) -> None:
        if self._rules_file is None or self._faulty is None:
            return
        rules = self._rules_file.poll()  # never raises
        if rules is not None:
            self._faulty.set_rules(rules)

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Ask for a graceful leave (safe to call from a signal handler via the loop)."""
        self._stop_requested.set()

    def crash(self) -> None:
        """Stop now without leaving: `run()` returns and closes the sockets, telling no one.

        Peers see exactly what a killed process would leave them: a silent endpoint, so they
        suspect it and then declare it failed. Call from the agent's event loop.
        """
        self._crashed.set()
        self._stop_requested.set()

    @property
    def crashed(self) -> bool:
        return self._crashed.is_set()

    async def run(self) -> None:
        """Run until `request_stop()`; raises JoinError if no seed answers in time."""
        tasks: list[asyncio.Task] = []
        loop = asyncio.get_running_loop()
        graceful = False
        try:
            self._open_event_log()
            self._loop = loop
            loops = [self._recv_loop(), self._load_loop()]
            if self.verifier is not None:
                loops.append(self._keys_loop())
            if self._rules_file is not None:
                log.warning("fault injection enabled from %s (testing only)",
                            self._rules_file.path)  # fmt: skip
                loops.append(self._faults_loop())
            for coro in loops:
                tasks.append(loop.create_task(coro))
            self.transport.serve_datagrams(self.handle_datagram)
            seeds = [s for s in self.opts.seeds if s != self.opts.advertise]
            log.info("agent %s listening on %s (advertised as %s)", self.node_id,
                     self.transport.endpoint, self.opts.advertise)  # fmt: skip
            self._apply(self.node.join(self.now(), seeds))
            if seeds:
                await self._await_join(seeds)
            await self._stop_requested.wait()
            if not self._crashed.is_set():
                await self._leave()
                graceful = not self._crashed.is_set()
        finally:
            self._loop = None  # no tick after this
            if self._tick_timer is not None:
                self._tick_timer.cancel()
            pending = set(tasks)
            while pending:  # cancel until every loop has really stopped
                for t in pending:
                    t.cancel()
                _done, pending = await asyncio.wait(pending, timeout=1.0)
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.executor.close()  # a crash reports nothing: see _on_task_exit
            self._closed = True
            self.transport.close()
            self._event("stop", how="leave" if graceful else "crash")
            if self.events is not None:
                self.events.close()

    def _open_event_log(self) -> None:
        if not self.opts.event_log or self.events is not None:
            return
        self.events = EventLog(self.opts.event_log, self.node_id)  # never raises
        c = self.opts.capacity
        self._event("start", addr=self.opts.advertise, pid=os.getpid(), cpus=c.cpus,
                    memory=c.memory, gpus=c.gpus)  # fmt: skip

    async def _await_join(self, seeds: list[str]) -> None:
        deadline = self.now() + self.opts.join_timeout
        while not self.core.joined:
            if self._stop_requested.is_set():
                return
            if self.now() >= deadline:
                raise JoinError(
                    f"could not reach any seed ({', '.join(seeds)}) "
                    f"within {self.opts.join_timeout:g} s"
                )
            await asyncio.sleep(0.02)
        log.info("joined the cluster via %s", ", ".join(seeds))

    async def _leave(self) -> None:
        linger = self.opts.swim.leave_linger
        log.info("leaving the cluster (lingering %.1f s so peers learn it)", linger)
        try:
            self._apply(self.node.leave(self.now()))
        except Exception as e:
            self.counters["handler_errors"] += 1
            log.debug("leave failed: %r", e, exc_info=True)
        with contextlib.suppress(TimeoutError):  # a crash() cuts the linger short
            async with asyncio.timeout(linger):
                await self._crashed.wait()


async def run_agent(options: AgentOptions, install_signals: bool = True) -> None:
    """Bind, run until SIGTERM/SIGINT (graceful leave), then return. Raises AgentError/BindError."""
    agent = Agent.start(options)
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
    try:
        await agent.run()
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
