"""The ZeroMQ transport shell: one bound ROUTER per agent, one cached DEALER per peer.

Every agent binds exactly one ROUTER socket (e.g. ``tcp://0.0.0.0:7946``) and receives all
traffic on it: protocol messages from peers and requests from clients (the CLI). Peers are
reached through a DEALER per peer address, used with *datagram semantics*: a message that
cannot be queued right away is dropped and counted, never waited for, so a dead or slow peer
can never block the agent.

One refinement of "drop on EAGAIN": a freshly created DEALER has no connection yet, and with
``ZMQ_IMMEDIATE`` every send fails until the TCP handshake completes (a millisecond on a LAN).
Dropping there would lose e.g. the very first join message to a seed. So a message that finds
its peer not (yet) connected is held in a small per-peer queue for at most ``pending_timeout``
seconds; it is flushed when the connection comes up and dropped (counted as ``dropped_timeout``)
otherwise. The queue is bounded (``max_pending``); overflow is dropped and counted.

Nothing here knows the protocol: payloads are bytes, encoded and decoded by `gossip.wire`.

`Transport` is the seam the agent is written against (as memberlist's ``Transport``): ZeroMQ
here, a fault-rule wrapper in `gossip.faults`, anything a test needs, without monkey-patching.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import zmq
import zmq.asyncio

from gossip.wire import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

Identity = tuple[bytes, ...]
"""The routing frames of a message received on the ROUTER: opaque, pass it back to `reply`."""


@runtime_checkable
class Transport(Protocol):
    """What an agent needs of its transport: datagram-style sends, one receive stream, replies.

    `send` and `reply` never block and never raise (a message that cannot go is counted and
    dropped); `recv` yields (routing identity, payload) of every frame received.
    """

    @property
    def endpoint(self) -> str: ...  # the endpoint actually bound

    @property
    def stats(self) -> Mapping[str, int]: ...  # counters, shown by `agora members --stats`

    @property
    def peer_count(self) -> int: ...  # open connections to peers

    async def recv(self) -> tuple[Identity, bytes]: ...

    def reply(self, identity: Identity, payload: bytes) -> None: ...

    def send(self, addr: str, payload: bytes) -> None: ...

    def close(self) -> None: ...


class TransportError(Exception):
    """A transport that cannot be set up as asked (the message says why, for a human)."""


class BindError(TransportError):
    """The listen endpoint cannot be bound: address in use, bad endpoint, no such interface."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot bind {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TransportConfig:
    sndhwm: int = 64  # messages queued per peer in ZeroMQ before sends fail (then dropped)
    rcvhwm: int = 10_000  # messages queued on the ROUTER before ZeroMQ drops incoming ones
    max_pending: int = 32  # messages held per not-yet-connected peer
    pending_timeout: float = 1.0  # seconds a not-yet-connected peer's messages are held
    max_peers: int = 4096  # cached DEALER sockets; the least recently used is closed beyond this
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2_000


@dataclass(slots=True)
class _Peer:
    sock: zmq.Socket  # a plain (synchronous) socket: sends are immediate, never awaited
    pending: collections.deque[bytes] = field(default_factory=collections.deque)
    flusher: asyncio.Task | None = None


def _bind_reason(err: zmq.ZMQError) -> str:
    if err.errno == zmq.EADDRINUSE:
        return "address already in use (is another agent running on this port?)"
    if err.errno == zmq.EADDRNOTAVAIL:
        return "address not available on this machine"
    if err.errno == zmq.EPROTONOSUPPORT:
        return "unsupported transport (use tcp://HOST:PORT)"
    if err.errno == zmq.EINVAL:
        return "invalid endpoint (expected tcp://HOST:PORT)"
    if err.errno == errno.ENODEV:
        return "no such host or network interface"
    return err.strerror


class ZmqTransport:
    """asyncio ZeroMQ transport. Create with `ZmqTransport.bind(endpoint)`; `close()` when done.

    Counters (all in `stats`): ``sent``, ``received``, ``replies``, ``reply_dropped``,
    ``dropped_timeout`` (peer not connected, or its queue full, for `pending_timeout`),
    ``dropped_pending_overflow`` (more than `max_pending` held), ``dropped_bad_frames`` (an
    unexpected frame layout), ``dropped_invalid_addr``, ``send_errors``, ``peers_evicted``.
    """

    def __init__(
        self, ctx: zmq.asyncio.Context, router: zmq.asyncio.Socket, endpoint: str,
        config: TransportConfig,
    ) -> None:  # fmt: skip
        self._ctx = ctx
        self._router = router
        self.endpoint = endpoint  # the endpoint actually bound (a "*" port is resolved)
        self.config = config
        self._peers: collections.OrderedDict[str, _Peer] = collections.OrderedDict()
        self._closed = False
        self.stats: collections.Counter[str] = collections.Counter()

    @classmethod
    def bind(cls, endpoint: str, config: TransportConfig | None = None) -> ZmqTransport:
        """Bind the agent's ROUTER; raises BindError with a human-readable reason."""
        config = config or TransportConfig()
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, config.rcvhwm)
        router.setsockopt(zmq.SNDHWM, config.rcvhwm)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 1024)
        # a reply to a client that has gone away is dropped silently (not an error)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        try:
            router.bind(endpoint)
        except zmq.ZMQError as e:
            router.close(0)
            ctx.term()
            raise BindError(endpoint, _bind_reason(e)) from None
        bound = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        log.debug("bound ROUTER at %s", bound)
        return cls(ctx, router, bound, config)

    # ------------------------------------------------------------------ receiving

    async def recv(self) -> tuple[Identity, bytes]:
        """The next message: (routing identity, payload). Malformed frame layouts are skipped.

        A DEALER sends ``[payload]`` (the ROUTER prepends the identity); a REQ socket sends
        ``[b"", payload]``. Both are accepted; anything else is counted and dropped.
        """
        while True:
            frames = await self._router.recv_multipart(copy=True)
            if len(frames) == 2:
                ident, payload = (frames[0],), frames[1]
            elif len(frames) == 3 and frames[1] == b"":
                ident, payload = (frames[0], b""), frames[2]
            else:
                self.stats["dropped_bad_frames"] += 1
                continue
            self.stats["received"] += 1
            self.stats["bytes_received"] += len(payload)
            return ident, payload

    def reply(self, identity: Identity, payload: bytes) -> None:
        """Answer a client on the ROUTER. Never blocks; a reply that cannot be queued is dropped.

        The asyncio ROUTER reports the outcome of a NOBLOCK send through a future (completed
        at once); it is counted in `stats` as ``replies`` or ``reply_dropped``.
        """
        if self._closed:
            return
        try:
            fut = self._router.send_multipart([*identity, payload], flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            self.stats["reply_dropped"] += 1
            log.debug("reply failed: %s", e)
            return
        fut.add_done_callback(self._reply_done)

    def _reply_done(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.stats["reply_dropped"] += 1
            if not fut.cancelled():
                log.debug("reply dropped: %r", fut.exception())
        else:
            self.stats["replies"] += 1

    # ------------------------------------------------------------------ sending

    def _peer(self, addr: str) -> _Peer | None:
        peer = self._peers.get(addr)
        if peer is not None:
            self._peers.move_to_end(addr)
            return peer
        # Not an asyncio socket: with zmq.asyncio a NOBLOCK send reports EAGAIN through a
        # future instead of raising, and these sockets are only ever written to.
        sock = zmq.Socket(self._ctx, zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        sock.setsockopt(zmq.RCVHWM, 1)  # peers answer on their own DEALERs, never on this one
        sock.setsockopt(zmq.RECONNECT_IVL, self.config.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, self.config.reconnect_ivl_max_ms)
        try:
            sock.connect(addr)
        except zmq.ZMQError as e:
            sock.close(0)
            self.stats["dropped_invalid_addr"] += 1
            log.debug("cannot connect to %r: %s", addr, e)
            return None
        peer = _Peer(sock)
        self._peers[addr] = peer
        while len(self._peers) > self.config.max_peers:
            old_addr, old = self._peers.popitem(last=False)
            self._close_peer(old)
            self.stats["peers_evicted"] += 1
            log.debug("evicted idle peer socket %s", old_addr)
        return peer

    def send(self, addr: str, payload: bytes) -> None:
        """Send one datagram to the agent bound at `addr`. Never blocks, never raises."""
        if self._closed:
            return
        peer = self._peer(addr)
        if peer is None:
            return
        if peer.pending:  # keep order behind messages already waiting for the connection
            self._hold(addr, peer, payload)
            return
        try:
            peer.sock.send(payload, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._hold(addr, peer, payload)
            return
        except zmq.ZMQError as e:
            self.stats["send_errors"] += 1
            log.debug("send to %s failed: %s", addr, e)
            return
        self.stats["sent"] += 1
        self.stats["bytes_sent"] += len(payload)

    def _hold(self, addr: str, peer: _Peer, payload: bytes) -> None:
        if len(peer.pending) >= self.config.max_pending:
            self.stats["dropped_pending_overflow"] += 1
            return
        peer.pending.append(payload)
        if peer.flusher is None or peer.flusher.done():
            peer.flusher = asyncio.get_running_loop().create_task(self._flush(addr, peer))

    async def _flush(self, addr: str, peer: _Peer) -> None:
        """Retry (bounded) until the peer's connection is up, then send what is held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.pending_timeout
        pause = 0.002
        try:
            while peer.pending and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.1)
                while peer.pending:
                    try:
                        peer.sock.send(peer.pending[0], flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    payload = peer.pending.popleft()
                    self.stats["sent"] += 1
                    self.stats["bytes_sent"] += len(payload)
            if peer.pending:
                self.stats["dropped_timeout"] += len(peer.pending)
                log.debug("dropped %d message(s) to unreachable %s", len(peer.pending), addr)
                peer.pending.clear()
        except (zmq.ZMQError, asyncio.CancelledError):
            peer.pending.clear()  # socket closed (eviction or shutdown)

    def _close_peer(self, peer: _Peer) -> None:
        if peer.flusher is not None and not peer.flusher.done():
            peer.flusher.cancel()
        self.stats["dropped_timeout"] += len(peer.pending)
        peer.pending.clear()
        peer.sock.close(0)

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def close(self) -> None:
        """Close every socket and the context. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for peer in self._peers.values():
            self._close_peer(peer)
        self._peers.clear()
        self._router.close(0)
        with contextlib.suppress(zmq.ZMQError):
            self._ctx.term()
