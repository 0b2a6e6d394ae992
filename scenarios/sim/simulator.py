"""Deterministic discrete-event shell: a virtual clock and a virtual network hosting pure cores.

Any object with this duck-typed interface can be a node (see DESIGN.md, "cores are pure"):

    core.on_message(now: float, msg: Message) -> list[Outgoing] | None
    core.on_tick(now: float) -> list[Outgoing] | None
    core.next_wakeup() -> float   # absolute virtual time of the next wanted on_tick; inf = never

Nodes are registered by their address string; an `Outgoing(addr, msg)` is delivered to the node
registered at `addr` after a delay drawn by the `NetworkModel`.

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
node gets one tick), `partition` / `heal`, global `set_loss`, per-link `set_link`.
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
from scenarios.sim.network import DROP_LOSS, NetworkModel

# event kinds (third element of a heap tuple)
_DELIVER = 0
_TICK = 1
_SCHEDULED = 2

# node states
_LIVE = 0
_PAUSED = 1
_CRASHED = 2

_STATE_NAMES = {_LIVE: "live", _PAUSED: "paused", _CRASHED: "crashed"}

# a core asking for on_tick again at the same instant this many times in a row is a bug (it
# would spin forever in a real shell too); fail loudly instead of hanging.
_MAX_SPIN = 10_000

DROP_REASONS = ("loss", "partition", "crashed", "unknown_addr", "wire", "queue")

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
        "addr", "core", "on_message", "on_tick", "next_wakeup", "state", "gen", "wake",
        "buffer", "sent", "received", "bytes_sent", "bytes_received", "ticks", "spin",
    )  # fmt: skip

    def __init__(self, addr: str, core: Any) -> None:
        self.addr = addr
        self.core = core
        self.on_message = core.on_message
        self.on_tick = core.on_tick
        self.next_wakeup = core.next_wakeup
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

    # ------------------------------------------------------------------ driving

    def call(self, addr: str, fn: Fn) -> Any:
        """Run fn(core, now) on the node now and route the Outgoing list it returns.

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
                        self.trace.append((now, "deliver", addr, (x.sender, int(x.kind), x.seq)))
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
                self.trace.append((now, "deliver", addr, (x.sender, int(x.kind), x.seq)))
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

    def _route(self, node: _Node, out: Iterable, now: float) -> None:
        nodes = self._nodes
        transit = self.network.transit
        heap = self._heap
        push = heapq.heappush
        seq = self._seq
        src = node.addr
        limit = self.network.burst_limit
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
            d = transit(src, addr)
            if d < 0.0:
                self._drop["loss" if d == DROP_LOSS else "partition"] += 1
                continue
            if self.encode_messages:
                try:
                    data = wire.encode(msg)
                except wire.WireError as e:
                    self._drop["wire"] += 1
                    self.trace.append((now, "wire_error", src, e.reason))
                    continue
                node.bytes_sent += len(data)
                msg = data
            self._delay_sum += d
            push(heap, (now + d, next(seq), _DELIVER, addr, msg))
        node.sent += n

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
