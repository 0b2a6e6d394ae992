"""Fault injection in the transport: silent loss, added delay and partitions, for tests only.

Why here and not in the network: ZeroMQ over TCP turns packet loss into delay, and netem is not
available on these machines (see DESIGN.md), so the faults a scenario needs are applied to the
agent's outgoing protocol messages before they reach the real transport. `FaultyTransport`
wraps any `Transport` behind the same seam, so no monkey-patching is needed:

- ``loss``: each outgoing protocol message is dropped with this probability (silent, as on a wire);
- ``delay``: seconds added to each outgoing message, kept in order per peer;
- ``blocked``: peer addresses every message to which is dropped; two agents blocking each other
  are partitioned.

Replies to clients (`reply`) are never faulted: the runner that injects the faults must still be
able to ask the agent what it sees. Receives are not faulted either: a fault on a link is
applied by its sender (both sides block each other for a partition).

The rules live in a JSON file the runner rewrites while the agent runs (`RulesFile`, polled),
e.g. ``{"loss": 0.1, "delay": 0.05, "blocked": ["tcp://127.0.0.1:7001"]}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossip.datagram import fits
from gossip.transport import DatagramHandler, Identity, Received, Transport

log = logging.getLogger(__name__)

MAX_DELAY = 60.0  # seconds
MAX_BLOCKED = 4096  # addresses
MAX_ADDR_LEN = 1024
MAX_RULES_BYTES = 1 << 20  # a rules file larger than this is refused
MAX_HELD = 4096  # delayed messages held at once (all peers); beyond this they are dropped
_KEYS = ("blocked", "delay", "loss")


def _number(key: str, v: Any, high: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: expected a number, got {v!r}")
    try:
        v = float(v)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v) or v < 0 or v > high:
        raise ValueError(f"{key}: expected a number from 0 to {high:g}, got {v!r}")
    return v


def _addresses(v: Any) -> frozenset[str]:
    if isinstance(v, str) or not isinstance(v, list | tuple | set | frozenset):
        raise ValueError(f"blocked: expected a list of peer addresses, got {v!r}")
    if len(v) > MAX_BLOCKED:
        raise ValueError(f"blocked: more than {MAX_BLOCKED} addresses ({len(v)})")
    for a in v:
        if not isinstance(a, str) or not a or len(a) > MAX_ADDR_LEN:
            raise ValueError(f"blocked: expected non-empty address strings, got {a!r}")
    return frozenset(v)


@dataclass(frozen=True, slots=True)
class FaultRules:
    """What to do to outgoing protocol messages. The default is no fault at all."""

    loss: float = 0.0  # probability 0..1 of dropping a message
    delay: float = 0.0  # seconds added to every message (0..60)
    blocked: frozenset[str] = frozenset()  # peer addresses (as advertised) cut off entirely

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", _number("loss", self.loss, 1.0))
        object.__setattr__(self, "delay", _number("delay", self.delay, MAX_DELAY))
        object.__setattr__(self, "blocked", _addresses(self.blocked))

    @classmethod
    def from_json(cls, text: str | bytes) -> FaultRules:
        """Parse and validate strictly; ValueError with a one-line reason otherwise."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except (UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"not JSON: {type(e).__name__}") from None
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
        return cls(
            loss=data.get("loss", 0.0), delay=data.get("delay", 0.0),
            blocked=_addresses(data.get("blocked", [])),
        )  # fmt: skip

    def describe(self) -> str:
        if not (self.loss or self.delay or self.blocked):
            return "no faults"
        return f"loss {self.loss:g}, delay {self.delay:g} s, {len(self.blocked)} peer(s) blocked"


class FaultyTransport:
    """A `Transport` that applies the current `FaultRules` to `send()` and passes the rest on.

    Delayed messages are held per peer in send order (a later message never overtakes an
    earlier one, even when the delay is lowered) and released by ``loop.call_at``; at most
    `max_held` are held, more are dropped (``fault_dropped_overflow``). A peer blocked while its
    messages are held loses them too: a partition also cuts what was in flight.

    Counters, merged into `stats` with the inner transport's: ``fault_dropped_loss``,
    ``fault_dropped_blocked``, ``fault_delayed``, ``fault_dropped_overflow``,
    ``fault_dropped_closed`` (held when the transport closed).
    """

    def __init__(
        self, inner: Transport, rng: random.Random, rules: FaultRules | None = None,
        max_held: int = MAX_HELD,
    ) -> None:  # fmt: skip
        self.inner = inner
        self._rng = rng
        self._rules = rules or FaultRules()
        self.max_held = max_held
        self._held: dict[str, collections.deque[tuple[float, bytes]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._held_total = 0
        self._closed = False
        self._stats: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ the Transport seam

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    @property
    def stats(self) -> collections.Counter[str]:
        merged = collections.Counter(dict(self.inner.stats))
        merged.update(self._stats)
        return merged

    @property
    def peer_count(self) -> int:
        return self.inner.peer_count

    async def recv(self) -> Received:
        return await self.inner.recv()

    def reply(self, identity: Identity, payload: bytes) -> None:
        self.inner.reply(identity, payload)  # never faulted: the runner's queries get through

    def send(self, addr: str, payload: bytes) -> None:
        if self._closed:
            return
        rules = self._rules
        if addr in rules.blocked:
            self._stats["fault_dropped_blocked"] += 1
            return
        if rules.loss and self._rng.random() < rules.loss:
            self._stats["fault_dropped_loss"] += 1
            return
        queue = self._held.get(addr)
        if rules.delay <= 0 and not queue:
            self.inner.send(addr, payload)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to delay on (a test calling outside one): send now
            self.inner.send(addr, payload)
            return
        if self._held_total >= self.max_held:
            self._stats["fault_dropped_overflow"] += 1
            return
        due = loop.time() + rules.delay
        if queue is None:
            queue = self._held[addr] = collections.deque()
        elif queue:
            due = max(due, queue[-1][0])  # in order behind what is already held
        queue.append((due, payload))
        self._held_total += 1
        self._stats["fault_delayed"] += 1
        if addr not in self._timers:
            self._timers[addr] = loop.call_at(due, self._release, addr)

    def send_datagram(self, addr: str, payload: bytes) -> bool:
        """As `send`, for a datagram: lost, blocked or delayed on its own (no order kept)."""
        if not fits(payload):
            return self.inner.send_datagram(addr, payload)  # too big: says so, sends nothing
        if self._closed:
            return True
        rules = self._rules
        if addr in rules.blocked:
            self._stats["fault_dropped_blocked"] += 1
            return True
        if rules.loss and self._rng.random() < rules.loss:
            self._stats["fault_dropped_loss"] += 1
            return True
        if rules.delay > 0:
            with contextlib.suppress(RuntimeError):  # no loop to delay on: send now
                asyncio.get_running_loop().call_later(rules.delay, self._release_datagram,
                                                      addr, payload)  # fmt: skip
                self._stats["fault_delayed"] += 1
                return True
        return self.inner.send_datagram(addr, payload)

    def _release_datagram(self, addr: str, payload: bytes) -> None:
        if self._closed:
            return
        if addr in self._rules.blocked:
            self._stats["fault_dropped_blocked"] += 1
            return
        self.inner.send_datagram(addr, payload)

    def serve_datagrams(self, handler: DatagramHandler) -> None:
        self.inner.serve_datagrams(handler)

    def reset_peer(self, addr: str) -> None:
        """Drop what is held for `addr` too: it was queued for the stream being reset."""
        queue = self._held.pop(addr, None)
        if queue:
            self._held_total -= len(queue)
            self._stats["fault_dropped_reset"] += len(queue)
        timer = self._timers.pop(addr, None)
        if timer is not None:
            timer.cancel()
        self.inner.reset_peer(addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._stats["fault_dropped_closed"] += self._held_total
        self._held.clear()
        self._held_total = 0
        self.inner.close()

    # ------------------------------------------------------------------ rules

    @property
    def rules(self) -> FaultRules:
        return self._rules

    def set_rules(self, rules: FaultRules) -> None:
        """Apply from now on (messages already held keep their release time)."""
        self._rules = rules

    def _release(self, addr: str) -> None:
        self._timers.pop(addr, None)
        queue = self._held.get(addr)
        if queue is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # call_at may fire up to the clock resolution early
        while queue and queue[0][0] <= now:
            _due, payload = queue.popleft()
            self._held_total -= 1
            if addr in self._rules.blocked:
                self._stats["fault_dropped_blocked"] += 1
                continue
            try:
                self.inner.send(addr, payload)
            except Exception as e:  # the inner transport must not raise; be safe anyway
                self._stats["fault_send_errors"] += 1
                log.debug("delayed send to %s failed: %r", addr, e)
        if queue:
            self._timers[addr] = loop.call_at(queue[0][0], self._release, addr)
        else:
            del self._held[addr]


class RulesFile:
    """A rules file polled for changes: the runner rewrites it to change faults on the fly.

    `poll()` re-reads the file when its inode, mtime or size changed. A missing file means no
    faults. An invalid one (bad JSON, a bad value, unreadable) keeps the previous rules, is
    logged once as a warning with the reason and counted in `errors`. Write it atomically
    (write a temporary file, then rename) so the agent never reads half of it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rules = FaultRules()
        self.errors = 0
        self._sig: tuple[int, int, int] | None = None
        self._polled = False

    def poll(self) -> FaultRules | None:
        """The new rules if they changed since the last poll, else None. Never raises."""
        try:
            return self._poll()
        except Exception as e:  # pragma: no cover - a bug here must not reach the agent
            self.errors += 1
            log.warning("fault rules %s: %r; keeping the previous rules", self.path, e)
            return None

    def _poll(self) -> FaultRules | None:
        try:
            st = os.stat(self.path)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        except OSError as e:
            sig = (-1, -1, e.errno or 0)  # e.g. permission denied: reported once, as invalid
        if self._polled and sig == self._sig:
            return None
        self._polled = True
        self._sig = sig
        if sig is None:
            rules = FaultRules()
        else:
            try:
                rules = self._read()
            except (OSError, ValueError) as e:
                self.errors += 1
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                log.warning("fault rules %s: %s; keeping the previous rules (%s)", self.path,
                            reason, self.rules.describe())  # fmt: skip
                return None
        if rules == self.rules:
            return None
        self.rules = rules
        log.info("fault rules from %s: %s", self.path, rules.describe())
        return rules

    def _read(self) -> FaultRules:
        with open(self.path, "rb") as f:
            data = f.read(MAX_RULES_BYTES + 1)
        if len(data) > MAX_RULES_BYTES:
            raise ValueError(f"larger than {MAX_RULES_BYTES} bytes")
        return FaultRules.from_json(data)
