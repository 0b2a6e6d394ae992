"""The simulated network: one-way latency with jitter, random loss, per-link overrides, partitions.

The model only decides the fate of one message at a time (`transit`): either a delay after
which it arrives, or a drop reason. It keeps no queue; the simulator schedules the delivery.
`burst_limit` stands for the real transport's bounded per-peer send queue: of the messages one
node emits to one peer at the same instant, those beyond it are dropped (a hand-back of
hundreds of records to a peer whose connection is not up yet loses all but the first ones).
All randomness comes from one `random.Random` that the simulator binds (derived from its seed),
so a run is reproduced bit for bit.

Jitter is drawn independently per message, so two messages on the same link can arrive in the
opposite order from the one they were sent in (unless they ride a stream, below). That is
deliberate: cores must survive it.

Streams (`set_streams`, off by default): real agents send only failure detection as datagrams
(`gossip.kinds.rides_datagram`); everything else rides a per-peer ZeroMQ TCP stream, where
loss becomes delay and a partition a burst of stale messages at the heal. With streams on, the
simulator carries those messages on a TCP-like (src, dst) link, in order: a lost transmission
is retransmitted after an RTO doubling from `rto_min` to `rto_max`, and later messages wait
behind it; across a partition the link stalls, queues what follows (at most
`StreamConfig.buffer`, ZeroMQ's send high-water mark) and retries with the same backoff, so the
first retry after the heal delivers the backlog at once. Each transmission's fate is still
drawn by `transit`. Datagram messages keep the behaviour above.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

# `transit` returns a delay >= 0, or one of these negative sentinels (no allocation per message).
DROP_LOSS = -1.0
DROP_PARTITION = -2.0

_UNLISTED = -1  # group of every node not named in a partition


def _check_prob(p: float, what: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {p}")
    return p


def _check_time(t: float, what: str) -> float:
    t = float(t)
    if not (t >= 0.0 and math.isfinite(t)):
        raise ValueError(f"{what} must be a finite number >= 0, got {t}")
    return t


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How a simulated TCP stream retransmits and how much a stalled one holds.

    `rto_min` is Linux's minimum retransmission timeout (200 ms) and `rto_max` its TCP_RTO_MAX
    (120 s): after a long partition a stream resumes only at its next retry, up to `rto_max`
    after the heal. `buffer` is the messages a stalled link queues, like ZeroMQ's per-peer send
    high-water mark (the agents' `sndhwm`); beyond it sends are dropped. A message lost
    `retries` times in a row is dropped as loss: the connection timed out (Linux's
    tcp_retries2, 15: about 15 minutes at the default RTOs). A partition never times a stream
    out: ZeroMQ would keep its queue and reconnect.

    `datagrams` False puts every message on the streams, probes too, and `resets` False keeps
    a suspected peer's stream (its backlog is delivered once it is reachable): both together
    are the agents' shell before issue 12, kept to show the simulator finds what it did.
    """

    rto_min: float = 0.2
    rto_max: float = 120.0
    buffer: int = 64
    retries: int = 15
    datagrams: bool = True
    resets: bool = True

    def __post_init__(self) -> None:
        for name in ("rto_min", "rto_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"stream {name} must be a number of seconds, got {v!r}")
            if not (v > 0.0 and math.isfinite(v)):  # 0 would retry at the same instant forever
                raise ValueError(f"stream {name} must be a finite number > 0, got {v!r}")
        if self.rto_max < self.rto_min:
            raise ValueError(f"stream rto_max ({self.rto_max}) must be >= rto_min ({self.rto_min})")
        b = self.buffer
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"stream buffer must be an integer >= 1, got {b!r}")
        r = self.retries
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"stream retries must be an integer >= 0, got {r!r}")
        for name in ("datagrams", "resets"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"stream {name} must be true or false, got "
                                 f"{getattr(self, name)!r}")  # fmt: skip


class NetworkModel:
    """Base latency + uniform jitter in [0, jitter) + loss probability, all in seconds.

    Per-link overrides (`set_link`) replace any of latency / jitter / loss for one direction
    (both by default); fields left as None keep following the global values. `streams` turns
    on the stream model for non-datagram messages (see the module doc and `set_streams`).
    """

    def __init__(
        self,
        latency: float = 0.001,
        jitter: float = 0.0005,
        loss: float = 0.0,
        streams: bool | StreamConfig = False,
    ) -> None:
        self.latency = _check_time(latency, "latency")
        self.jitter = _check_time(jitter, "jitter")
        self.loss = _check_prob(loss, "loss")
        self.burst_limit: int | None = None  # messages to one peer at one instant; None: no bound
        self.streams: StreamConfig | None = None  # None: every message is a datagram
        self.set_streams(streams)
        self._links: dict[tuple[str, str], tuple[float | None, float | None, float | None]] = {}
        self._group: dict[str, int] | None = None
        self._deaf: set[str] = set()  # nodes that take nothing off their streams (`deafen`)
        self._random = random.Random(0).random  # replaced by bind(); never used unbound in sims

    def bind(self, rng: random.Random) -> None:
        """Draw all of this model's randomness from `rng` (the simulator does this)."""
        self._random = rng.random

    # ------------------------------------------------------------ configuration

    def set_loss(self, p: float) -> None:
        self.loss = _check_prob(p, "loss")

    def set_streams(self, streams: bool | StreamConfig) -> None:
        """True (default `StreamConfig`) or a `StreamConfig`: non-datagram messages ride
        TCP-like streams; False: every message is an independent datagram.

        Set it before the run: a stream keeps the config it was opened with.
        """
        if streams is True:
            self.streams = StreamConfig()
        elif streams is False:
            self.streams = None
        elif isinstance(streams, StreamConfig):
            self.streams = streams
        else:
            raise ValueError(f"streams must be True, False or a StreamConfig, got {streams!r}")

    def set_burst_limit(self, n: int | None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"burst_limit must be an integer >= 1 or None, got {n!r}")
        self.burst_limit = n

    def set_latency(self, latency: float, jitter: float | None = None) -> None:
        self.latency = _check_time(latency, "latency")
        if jitter is not None:
            self.jitter = _check_time(jitter, "jitter")

    def set_link(
        self,
        a: str,
        b: str,
        latency: float | None = None,
        loss: float | None = None,
        jitter: float | None = None,
        symmetric: bool = True,
    ) -> None:
        """Override the link a->b (and b->a unless symmetric=False). None = use global value."""
        ov = (
            None if latency is None else _check_time(latency, "latency"),
            None if jitter is None else _check_time(jitter, "jitter"),
            None if loss is None else _check_prob(loss, "loss"),
        )
        self._links[(a, b)] = ov
        if symmetric:
            self._links[(b, a)] = ov

    def clear_link(self, a: str, b: str, symmetric: bool = True) -> None:
        self._links.pop((a, b), None)
        if symmetric:
            self._links.pop((b, a), None)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: messages between different groups are dropped.

        Nodes not listed in any group form one more group together. Replaces any earlier
        partition. A node may appear in only one group.
        """
        group: dict[str, int] = {}
        for i, members in enumerate(groups):
            for addr in members:
                if addr in group:
                    raise ValueError(f"{addr} is in two partition groups")
                group[addr] = i
        self._group = group

    def heal(self) -> None:
        self._group = None

    def deafen(self, addr: str) -> None:
        """`addr` takes nothing off its incoming streams while its datagrams still pass both
        ways: alive to failure detection, deaf to everything else (a real agent whose stream
        receive stalled; a path that drops TCP but not UDP). Streams to it stall, as across
        a partition, for the rest of the run."""
        self._deaf.add(addr)

    def hears_streams(self, addr: str) -> bool:
        return addr not in self._deaf

    @property
    def partitioned_groups(self) -> dict[str, int] | None:
        return None if self._group is None else dict(self._group)

    def reachable(self, src: str, dst: str) -> bool:
        """True unless a partition separates src from dst (loss is not considered)."""
        g = self._group
        return g is None or g.get(src, _UNLISTED) == g.get(dst, _UNLISTED)

    # ------------------------------------------------------------ hot path

    def transit(self, src: str, dst: str) -> float:
        """The fate of one message src->dst: its delay (>= 0) or DROP_LOSS / DROP_PARTITION."""
        g = self._group
        if g is not None and g.get(src, _UNLISTED) != g.get(dst, _UNLISTED):
            return DROP_PARTITION
        latency, jitter, loss = self.latency, self.jitter, self.loss
        if self._links:
            ov = self._links.get((src, dst))
            if ov is not None:
                if ov[0] is not None:
                    latency = ov[0]
                if ov[1] is not None:
                    jitter = ov[1]
                if ov[2] is not None:
                    loss = ov[2]
        r = self._random
        if loss and r() < loss:
            return DROP_LOSS
        return latency + jitter * r() if jitter else latency
