"""Deterministic discrete-event shell: a virtual clock and a virtual network hosting pure cores.

Any object with this duck-typed interface can be a node (see DESIGN.md, "cores are pure"):

    core.on_message(now: float, msg: Message) -> list[effect] | None
    core.on_tick(now: float) -> list[effect] | None
    core.next_wakeup() -> float   # absolute virtual time of the next wanted on_tick; inf = never

Nodes are registered by their address string. The simulator carries out the effects a call
returns that belong to a network (`gossip.effects`): an `Outgoing(addr, msg)` is delivered to
the node registered at `addr` after a delay drawn by the `NetworkModel`, a `ResetStream` resets
that stream (below), and a `StatusChange` is kept for `take_events`, as an agent logs it. Any
other effect (a run to start, a client reply) is its host's to carry out (e.g.
`scenarios.sim.workload.SimNode`); one that reaches the simulator is a `SimulationError`.

Routing: by default every message is a datagram, its fate (delay or drop) drawn on its own.
With `NetworkModel.set_streams` on, a message whose body does not ride a datagram
(`gossip.kinds.rides_datagram`: everything but failure detection) goes on the (src, dst)
stream instead, like a ZeroMQ TCP connection. It never arrives before one sent earlier on that
stream. A transmission whose data or acknowledgement is lost is retransmitted after an RTO
doubling from `rto_min` to `rto_max` (all of a message's retransmissions are drawn when it is
sent: a partition starting meanwhile does not hold it back); later messages wait behind it, and
a connection that had to retransmit sends nothing new until that is acknowledged (its
congestion window collapsed), so under 40 % loss each way a stream falls seconds behind, as the
agents' did when probes rode TCP. `StreamConfig(datagrams=False, resets=False)` is that old
shell: every message on a stream and no resets. Across a partition the stream
stalls: later messages queue behind (beyond `buffer` they are dropped, reason "queue") and it
retries with the same backoff, so the first retry after the heal delivers the whole backlog at
once, the stale burst real agents see. `reset_stream` drops what a stream has not delivered
(reason "reset"), as the real shell closing a suspected peer's socket does; a node's
`ResetStream` effects are applied before what it sends next (not at the instant its core
decided: at most one gossip interval later), and only with `StreamConfig.resets`. A crash or
restart of a node resets every stream from and to it (reason "crashed"): a dead process
retransmits nothing, and a process restarted at the same address never gets bytes sent to its
predecessor.

Determinism: events sit in one heap of tuples ordered by (time, insertion number), so ties are
broken by the order in which they were scheduled. The simulator draws network randomness from
`sim.rng` (a `random.Random(seed)`); cores must be given their own generators by the caller,
derived from the same seed and the node's address, e.g.::

    sim = Simulator(seed)
    for addr in addrs:
        sim.add_node(addr, MyCore(addr, rng=random.Random(f"{seed}:{addr}")))

(`random.Random` seeded with a str is stable across processes; it does not depend on
PYTHONHASHSEED.) Same seed + same calls => bit-identical trace and `fingerprint()`.

Ticks: each node has exactly one live pending tick, at `core.next_wakeup()` as last reported.
After every call into a core (message, tick, `call`) the simulator asks `next_wakeup()` again;
if it changed, a new tick event is pushed and the old one becomes stale (generation counter).
`on_tick` is never called earlier than requested; a wakeup in the past runs at the current time.

Failures: `crash` (forever silent; in-flight messages to it are dropped on arrival), `pause` /
`resume` (a stopped process: its socket buffers incoming messages, and `call`s made meanwhile
are deferred; at resume the buffer is processed in arrival order at the resume time, then the
node gets one tick; its streams keep flowing, as the kernel's TCP does), `partition` / `heal`,
global `set_loss`, per-link `set_link`, `reset_stream`.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gossip import wire
from gossip.effects import Outgoing, ResetStream, StatusChange
from gossip.kinds import rides_datagram
from scenarios.sim.network import DROP_LOSS, DROP_PARTITION, NetworkModel, StreamConfig

# event kinds (third element of a heap tuple)
_DELIVER = 0
_TICK = 1
_SCHEDULED = 2
_STREAM = 3  # a delivery on a stream: payload (link, msg), void if the link was reset since
_RETRY = 4  # a stalled stream's retransmission timer: payload the link

# node states
_LIVE = 0
_PAUSED = 1
_CRASHED = 2

_STATE_NAMES = {_LIVE: "live", _PAUSED: "paused", _CRASHED: "crashed"}

# a core asking for on_tick again at the same instant this many times in a row is a bug (it
# would spin forever in a real shell too); fail loudly instead of hanging.
_MAX_SPIN = 10_000

MAX_EVENTS_KEPT = 10_000  # status changes kept per node until taken: a run that never takes
# them stays bounded

DROP_REASONS = ("loss", "partition", "crashed", "unknown_addr", "wire", "queue", "reset")

Fn = Callable[[Any, float], Any]


class SimulationError(RuntimeError):
    """Misuse of the simulator or a core that can never make progress."""


@dataclass(frozen=True, slots=True)
class NodeStats:
    sent: int
    received: int
    bytes_sent: int
    bytes_received: int
    ticks: int
    state: str


@dataclass(frozen=True, slots=True)
class SimMetrics:
    now: float
    events: int  # heap events processed (deliveries, ticks incl. stale, scheduled callbacks)
    ticks: int  # on_tick calls
    sent: int  # messages handed to the network by cores
    delivered: int  # messages passed to on_message
    dropped: dict[str, int] = field(default_factory=dict)  # by reason, see DROP_REASONS
    bytes_sent: int = 0  # only counted with encode_messages=True
    bytes_delivered: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class _Node:
    __slots__ = (
        "addr", "core", "on_message", "on_tick", "next_wakeup", "resets", "events", "state",
        "gen", "wake", "buffer", "sent", "received", "bytes_sent", "bytes_received", "ticks",
        "spin",
    )  # fmt: skip

    def __init__(self, addr: str, core: Any) -> None:
        self.addr = addr
        self.core = core
        self.on_message = core.on_message
        self.on_tick = core.on_tick
        self.next_wakeup = core.next_wakeup
        # the streams its core asked to be reset (a suspected peer's), in order, not yet reset
        self.resets: dict[str, None] = {}
        self.events: list[StatusChange] = []  # until `Simulator.take_events`
        self.state = _LIVE
        self.gen = 0  # generation of the one live tick event
        self.wake = math.nan  # wakeup time the live tick event was scheduled for (nan = none)
        # while paused: (_DELIVER, payload) and (_SCHEDULED, fn) in arrival order
        self.buffer: list[tuple[int, Any]] = []
        self.sent = 0
        self.received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.ticks = 0
        self.spin = 0


class _Stream:
    """One (src, dst) stream: the messages queued behind a partition, and the ones in flight.
    A reset closes it (stale events then find `closed`); the next send opens another."""

    __slots__ = ("src", "dst", "cfg", "queue", "rto", "last", "free", "inflight", "closed")

    def __init__(self, src: str, dst: str, cfg: StreamConfig) -> None:
        self.src = src
        self.dst = dst
        self.cfg = cfg
        self.queue: list[Any] = []  # non-empty = stalled: one _RETRY event is pending
        self.rto = cfg.rto_min
        self.last = 0.0  # arrival time of the latest message scheduled: nothing may overtake it
        self.free = 0.0  # after a retransmission: when it was acknowledged (nothing new before)
        self.inflight = 0  # delivery events scheduled and not yet popped
        self.closed = False


class Simulator:
    """A seeded discrete-event loop hosting cores at string addresses on a virtual network."""

    def __init__(
        self,
        seed: int,
        network: NetworkModel | None = None,
        *,
        encode_messages: bool = False,
        trace_messages: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = network if network is not None else NetworkModel()
        self.network.bind(random.Random(self.rng.getrandbits(64)))
        self.encode_messages = encode_messages
        self.trace_messages = trace_messages
        self.now = 0.0
        self.trace: list[tuple[float, str, str, Any]] = []
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._nodes: dict[str, _Node] = {}
        self._events = 0
        self._ticks = 0
        self._delivered = 0
        self._bytes_delivered = 0
        self._drop = dict.fromkeys(DROP_REASONS, 0)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._delay_sum = 0.0  # cheap digest of every network draw, folded into fingerprint()

    # ------------------------------------------------------------------ nodes

    def add_node(self, addr: str, core: Any) -> None:
        """Host `core` at `addr`; its first tick is at core.next_wakeup().

        An address whose previous node crashed may be reused (a restarted process with a fresh
        core); a live or paused address may not.
        """
        old = self._nodes.get(addr)
        if old is not None and old.state != _CRASHED:
            raise SimulationError(f"address {addr!r} is already in use")
        if old is not None:
            self._close_streams(addr, "crashed")
        node = _Node(addr, core)
        self._nodes[addr] = node
        self.trace.append((self.now, "add" if old is None else "restart", addr, None))
        self._reschedule(node, self.now)

    def core(self, addr: str) -> Any:
        return self._nodes[addr].core

    @property
    def addrs(self) -> list[str]:
        """Every address ever added, in order of addition."""
        return list(self._nodes)

    def live_addrs(self) -> list[str]:
        """Addresses of nodes that are neither crashed nor paused."""
        return [a for a, n in self._nodes.items() if n.state == _LIVE]

    def state(self, addr: str) -> str:
        return _STATE_NAMES[self._nodes[addr].state]

    def is_up(self, addr: str) -> bool:
        return self._nodes[addr].state == _LIVE

    def take_events(self, addr: str) -> list[StatusChange]:
        """The status changes the node's core saw since the last call (the current node at
        `addr`: a restarted one starts with none), at most `MAX_EVENTS_KEPT`."""
        node = self._nodes[addr]
        out, node.events = node.events, []
        return out

    # ------------------------------------------------------------------ driving

    def call(self, addr: str, fn: Fn) -> Any:
        """Run fn(core, now) on the node now and carry out the effects it returns.

        Returns fn's result. Crashed node: ignored, returns None. Paused node: deferred to its
        resume (like any work of a stopped process), returns None.
        """
        node = self._nodes[addr]
        if node.state == _CRASHED:
            return None
        if node.state == _PAUSED:
            node.buffer.append((_SCHEDULED, fn))
            return None
        return self._invoke(node, fn)

    def _invoke(self, node: _Node, fn: Fn) -> Any:
        now = self.now
        self.trace.append((now, "call", node.addr, getattr(fn, "__name__", type(fn).__name__)))
        out = fn(node.core, now)
        if out:
            self._route(node, out, now)
        self._reschedule(node, now)
        return out

    def schedule(self, at: float, fn: Callable[[Simulator], Any]) -> None:
        """Run fn(sim) at virtual time `at` (>= now), e.g. a failure injection in a scenario."""
        if at < self.now:
            raise SimulationError(f"cannot schedule in the past ({at} < {self.now})")
        heapq.heappush(self._heap, (at, next(self._seq), _SCHEDULED, "", fn))

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(
        self, pred: Callable[[], bool], timeout: float, check_every: float = 0.1
    ) -> float | None:
        """Run until pred() holds, checked now and every `check_every` virtual seconds.

        Returns the virtual time at which it was first seen true, or None after `timeout`.
        """
        if check_every <= 0:
            raise ValueError("check_every must be > 0")
        deadline = self.now + timeout
        while True:
            if pred():
                return self.now
            if self.now >= deadline:
                return None
            self.run_until(min(self.now + check_every, deadline))

    def run_until(self, t: float) -> None:
        """Process every event with time <= t, then set the clock to t."""
        if t < self.now:
            raise SimulationError(f"cannot run back in time ({t} < {self.now})")
        heap = self._heap
        pop = heapq.heappop
        nodes = self._nodes
        route = self._route
        encoding = self.encode_messages
        trace_messages = self.trace_messages
        events = 0
        try:
            while heap and heap[0][0] <= t:
                now, _, kind, addr, x = pop(heap)
                self.now = now
                events += 1
                if kind == _STREAM:
                    link, x = x
                    if link.closed:
                        continue  # reset after it was sent: counted then
                    link.inflight -= 1
                    kind = _DELIVER
                if kind == _DELIVER:
                    node = nodes[addr]
                    if node.state:
                        if node.state == _PAUSED:
                            node.buffer.append((_DELIVER, x))
                        else:
                            self._drop["crashed"] += 1
                        continue
                    if encoding:
                        x = self._decode(node, x)
                        if x is None:
                            continue
                    node.received += 1
                    self._delivered += 1
                    if trace_messages:
                        self.trace.append((now, "deliver", addr, (x.sender, x.kind.number, x.seq)))
                    out = node.on_message(now, x)
                    if out:
                        route(node, out, now)
                    w = node.next_wakeup()
                    if w != node.wake:
                        self._set_wake(node, w, now)
                elif kind == _TICK:
                    node = nodes[addr]
                    if x != node.gen or node.state:
                        continue  # stale: superseded by a newer wakeup, or node not running
                    self._tick(node, now)
                elif kind == _RETRY:
                    self._stream_retry(x, now)
                else:
                    x(self)
        finally:
            self._events += events
        self.now = t

    # ------------------------------------------------------------------ failures

    def crash(self, addr: str) -> None:
        """Stop the node forever: no more ticks, messages to it are dropped."""
        node = self._nodes[addr]
        if node.state == _CRASHED:
            return
        node.state = _CRASHED
        node.gen += 1
        node.wake = math.nan
        self._drop["crashed"] += sum(1 for k, _ in node.buffer if k == _DELIVER)
        node.buffer.clear()
        self._close_streams(addr, "crashed")
        self.trace.append((self.now, "crash", addr, None))

    def pause(self, addr: str) -> None:
        """Freeze the node (like SIGSTOP): no ticks; incoming messages wait in its buffer."""
        node = self._nodes[addr]
        if node.state != _LIVE:
            raise SimulationError(f"cannot pause {addr!r}: it is {_STATE_NAMES[node.state]}")
        node.state = _PAUSED
        node.gen += 1
        node.wake = math.nan
        self.trace.append((self.now, "pause", addr, None))

    def resume(self, addr: str) -> None:
        """Unfreeze: process buffered messages and deferred calls in order now, then tick."""
        node = self._nodes[addr]
        if node.state != _PAUSED:
            raise SimulationError(f"cannot resume {addr!r}: it is {_STATE_NAMES[node.state]}")
        node.state = _LIVE
        buffered, node.buffer = node.buffer, []
        now = self.now
        self.trace.append((now, "resume", addr, len(buffered)))
        for kind, x in buffered:
            if node.state != _LIVE:  # a deferred call may have crashed or paused it again
                if node.state == _PAUSED:
                    node.buffer.append((kind, x))
                continue
            if kind == _SCHEDULED:
                self._invoke(node, x)
                continue
            if self.encode_messages:
                x = self._decode(node, x)
                if x is None:
                    continue
            node.received += 1
            self._delivered += 1
            if self.trace_messages:
                self.trace.append((now, "deliver", addr, (x.sender, x.kind.number, x.seq)))
            out = node.on_message(now, x)
            if out:
                self._route(node, out, now)
        if node.state == _LIVE:
            self._tick(node, now)

    def partition(self, *groups: Iterable[str]) -> None:
        """Drop messages between groups; nodes not listed form one more group together."""
        groups = tuple(tuple(g) for g in groups)
        self.network.partition(*groups)
        self.trace.append((self.now, "partition", "", groups))

    def heal(self) -> None:
        self.network.heal()
        self.trace.append((self.now, "heal", "", None))

    def set_loss(self, p: float) -> None:
        self.network.set_loss(p)
        self.trace.append((self.now, "set_loss", "", p))

    def set_link(
        self,
        a: str,
        b: str,
        latency: float | None = None,
        loss: float | None = None,
        jitter: float | None = None,
        symmetric: bool = True,
    ) -> None:
        self.network.set_link(a, b, latency=latency, loss=loss, jitter=jitter, symmetric=symmetric)
        self.trace.append((self.now, "set_link", a, (b, latency, loss, jitter, symmetric)))

    def reset_stream(self, src: str, dst: str) -> int:
        """Drop what the src->dst stream has not delivered yet (queued or in flight, reason
        "reset") and start it afresh; returns how many. Stands for the real shell closing a
        suspected peer's socket with linger 0: the stale backlog dies with the connection."""
        link = self._streams.get((src, dst))
        n = 0 if link is None else self._close_stream(link, "reset")
        self.trace.append((self.now, "reset_stream", src, (dst, n)))
        return n

    def stream_backlog(self, src: str, dst: str) -> int:
        """Messages on the src->dst stream not delivered yet: queued behind a stall or in flight."""
        link = self._streams.get((src, dst))
        return 0 if link is None else len(link.queue) + link.inflight

    # ------------------------------------------------------------------ internals

    def _tick(self, node: _Node, now: float) -> None:
        node.wake = math.nan  # whatever it asks for next must be (re)scheduled
        node.ticks += 1
        self._ticks += 1
        out = node.on_tick(now)
        if out:
            self._route(node, out, now)
        w = node.next_wakeup()
        if w <= now:
            node.spin += 1
            if node.spin > _MAX_SPIN:
                raise SimulationError(
                    f"{node.addr}: core keeps asking for on_tick at {w} <= now={now}"
                )
        else:
            node.spin = 0
        self._set_wake(node, w, now)

    def _reschedule(self, node: _Node, now: float) -> None:
        if node.state:
            return
        w = node.next_wakeup()
        if w != node.wake:
            self._set_wake(node, w, now)

    def _set_wake(self, node: _Node, w: float, now: float) -> None:
        node.wake = w
        node.gen += 1
        if w != math.inf:
            if w != w:
                raise SimulationError(f"{node.addr}: next_wakeup() returned NaN")
            heapq.heappush(
                self._heap, (w if w > now else now, next(self._seq), _TICK, node.addr, node.gen)
            )

    def _route(self, node: _Node, effects: list, now: float) -> None:
        out = effects
        for e in effects:  # the hot path: most calls only send, and this allocates nothing
            if type(e) is not Outgoing:
                out = self._note(node, effects)
                break
        if not out:
            return
        nodes = self._nodes
        transit = self.network.transit
        heap = self._heap
        push = heapq.heappush
        seq = self._seq
        src = node.addr
        limit = self.network.burst_limit
        streams = self.network.streams
        encoding = self.encode_messages
        if node.resets:  # before what it sends now, like the agent's shell
            for dst in node.resets:
                self.reset_stream(src, dst)
            node.resets.clear()
        burst: dict[str, int] = {}
        n = 0
        for addr, msg in out:
            n += 1
            if addr not in nodes:
                self._drop["unknown_addr"] += 1
                continue
            if limit is not None:
                burst[addr] = k = burst.get(addr, 0) + 1
                if k > limit:
                    self._drop["queue"] += 1
                    continue
            if streams is not None and not (streams.datagrams and rides_datagram(msg.body)):
                if encoding:
                    msg = self._encode(node, msg, now)
                    if msg is None:
                        continue
                self._stream_send(src, addr, msg, now, streams)
                continue
            d = transit(src, addr)
            if d < 0.0:
                self._drop["loss" if d == DROP_LOSS else "partition"] += 1
                continue
            if encoding:
                msg = self._encode(node, msg, now)
                if msg is None:
                    continue
            self._delay_sum += d
            push(heap, (now + d, next(seq), _DELIVER, addr, msg))
        node.sent += n

    def _note(self, node: _Node, effects: list) -> list[Outgoing]:
        """Keep a node's effects other than messages — stream resets until it next sends,
        status changes for `take_events` — refuse any that is not the network's, and return
        the messages."""
        out = []
        resets = self.network.streams is not None and self.network.streams.resets
        for e in effects:
            match e:
                case Outgoing():
                    out.append(e)
                case ResetStream(dst):
                    if resets:
                        node.resets[dst] = None
                case StatusChange():
                    if len(node.events) < MAX_EVENTS_KEPT:
                        node.events.append(e)
                case _:
                    raise SimulationError(f"{node.addr}: a {type(e).__name__} is not the "
                                          "network's to carry out; call the core through its "
                                          "host (e.g. scenarios.sim.workload.on_core)")
        return out

    def _encode(self, node: _Node, msg: Any, now: float) -> bytes | None:
        try:
            data = wire.encode(msg)
        except wire.WireError as e:
            self._drop["wire"] += 1
            self.trace.append((now, "wire_error", node.addr, e.reason))
            return None
        node.bytes_sent += len(data)
        return data

    def _stream_send(self, src: str, dst: str, msg: Any, now: float, cfg: StreamConfig) -> None:
        link = self._streams.get((src, dst))
        if link is None:
            link = self._streams[(src, dst)] = _Stream(src, dst, cfg)
        if link.queue:  # stalled: wait behind the head (head-of-line blocking)
            if len(link.queue) >= link.cfg.buffer:
                self._drop["queue"] += 1
            else:
                link.queue.append(msg)
            return
        self._transmit(link, msg, now)

    def _transmit(self, link: _Stream, msg: Any, now: float) -> None:
        """Send msg on a link that is not stalled. Across a partition the link stalls. A
        transmission whose data or acknowledgement is lost is sent again after an RTO that
        doubles per try (from `rto_min`); the receiver has it from the first data that
        arrives. A connection that had to retransmit sends nothing new until that is
        acknowledged (its congestion window collapsed to one segment), so under heavy loss
        what is queued behind waits for seconds, as on real connections. All drawn now: later
        messages overtake it on the wire but are delivered after it."""
        transit = self.network.transit
        cfg = link.cfg
        src, dst = link.src, link.dst
        d = transit(src, dst)
        if d == DROP_PARTITION or not self.network.hears_streams(dst):
            link.queue.append(msg)
            self._stall(link, now, cfg.rto_min)
            return
        start = now if now > link.free else link.free
        wait = 0.0
        rto = cfg.rto_min
        tries = 0
        arrived = -1.0
        while True:
            if d >= 0.0:
                if arrived < 0.0:
                    arrived = wait + d
                a = transit(dst, src)
                if a >= 0.0:  # acknowledged
                    if tries:
                        link.free = start + wait + d + a
                    break
            if tries == cfg.retries:  # the connection timed out
                link.free = start + wait
                if arrived < 0.0:
                    self._drop["loss"] += 1
                    return
                break
            tries += 1
            wait += rto
            rto = min(2.0 * rto, cfg.rto_max)
            d = transit(src, dst)
        self._stream_deliver(link, msg, now, start - now + arrived)

    def _stall(self, link: _Stream, now: float, rto: float) -> None:
        link.rto = rto
        heapq.heappush(self._heap, (now + rto, next(self._seq), _RETRY, "", link))

    def _stream_retry(self, link: _Stream, now: float) -> None:
        """A stalled link's retransmission timer: still cut off, back off; else send the whole
        queue now, in order (after a partition: the stale burst at the first retry after it)."""
        if link.closed:
            return
        net = self.network
        if not (net.reachable(link.src, link.dst) and net.hears_streams(link.dst)):
            self._stall(link, now, min(2.0 * link.rto, link.cfg.rto_max))
            return
        queue, link.queue = link.queue, []
        for msg in queue:
            self._transmit(link, msg, now)

    def _stream_deliver(self, link: _Stream, msg: Any, now: float, d: float) -> None:
        at = now + d
        if at < link.last:
            at = link.last  # in order: never before a message sent earlier on this link
        link.last = at
        link.inflight += 1
        self._delay_sum += at - now
        heapq.heappush(self._heap, (at, next(self._seq), _STREAM, link.dst, (link, msg)))

    def _close_stream(self, link: _Stream, reason: str) -> int:
        n = len(link.queue) + link.inflight
        self._drop[reason] += n
        link.closed = True
        del self._streams[(link.src, link.dst)]
        return n

    def _close_streams(self, addr: str, reason: str) -> None:
        """Reset every stream from or to addr (its process died, or a new one took its place)."""
        for key in [k for k in self._streams if addr in k]:
            self._close_stream(self._streams[key], reason)

    def _decode(self, node: _Node, data: bytes) -> Any:
        try:
            msg = wire.decode(data)
        except wire.WireError as e:
            self._drop["wire"] += 1
            self.trace.append((self.now, "wire_error", node.addr, e.reason))
            return None
        node.bytes_received += len(data)
        self._bytes_delivered += len(data)
        return msg

    # ------------------------------------------------------------------ observation

    def node_stats(self, addr: str) -> NodeStats:
        n = self._nodes[addr]
        return NodeStats(
            n.sent, n.received, n.bytes_sent, n.bytes_received, n.ticks, _STATE_NAMES[n.state]
        )

    def metrics(self) -> SimMetrics:
        nodes = self._nodes.values()
        return SimMetrics(
            now=self.now,
            events=self._events,
            ticks=self._ticks,
            sent=sum(n.sent for n in nodes),
            delivered=self._delivered,
            dropped=dict(self._drop),
            bytes_sent=sum(n.bytes_sent for n in nodes),
            bytes_delivered=self._bytes_delivered,
        )

    @property
    def pending_events(self) -> int:
        """Heap size, stale tick events included."""
        return len(self._heap)

    def fingerprint(self) -> str:
        """A hash of the trace, the metrics, every node's counters and every network draw."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(self.trace).encode())
        h.update(repr(self.metrics()).encode())
        h.update(repr(self._delay_sum).encode())
        for n in self._nodes.values():
            h.update(repr((n.addr, n.state, n.sent, n.received, n.bytes_sent, n.ticks)).encode())
        return h.hexdigest()
