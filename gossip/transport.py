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

Beside the ROUTER, every agent binds a UDP socket on the same host and port: failure detection
rides single datagrams (`send_datagram`, framed and sealed by `gossip.datagram`), never queued
behind a stream's lost segment. What rides them is decided above (by each kind's
registration, `gossip.kinds`).
Sends are coalesced under load: while received messages wait to be handled, what is sent to
one peer in one turn of the event loop leaves as one multipart ZeroMQ message (one frame per
payload); the receiver drains its ROUTER without a future per message. Per message, that
spares a pyzmq future, a socket call and an I/O-thread wake-up on each side: much of what a
message cost under a burst of placements (issue 10).

`reset_peer` closes a peer's DEALER and drops what is queued to it: when a peer is suspected,
what waited for it (stale news, old state) is not delivered in a burst once it is reachable.

With `CurveKeys` every connection is CURVE-encrypted and authenticated: the ROUTER is a CURVE
server, pyzmq's ZAP authenticator hands each connection's client key to every message it
carries (its User-Id, returned by `recv`), and the DEALERs dial with this node's own keypair.
Who a key belongs to is decided above (`gossip.auth.Verifier`). During a key rotation a peer may
still serve the old server key: a peer whose connection does not come up within
`pending_timeout` is redialled with the next key of the ring.

`Transport` is the seam the agent is written against (as memberlist's ``Transport``): ZeroMQ
here, a fault-rule wrapper in `gossip.faults`, anything a test needs, without monkey-patching.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.base import Authenticator

from gossip.datagram import (
    MAX_DATAGRAM_BYTES,
    SEALED_OVERHEAD,
    DatagramCodec,
    DatagramError,
    DatagramKeys,
    fits,
    udp_target,
)
from gossip.wire import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

Identity = tuple[bytes, ...]
"""The routing frames of a message received on the ROUTER: opaque, pass it back to `reply`."""

Received = tuple[Identity, bytes, str]
"""(routing identity, payload, the connection's CURVE client key in z85, or "" when plain)."""

DatagramHandler = Callable[[bytes, str], None]
"""Called with (payload, the sender's z85 key or "" when plain) for every datagram opened."""


@runtime_checkable
class Transport(Protocol):
    """What an agent needs of its transport: datagram-style sends, one receive stream, replies.

    `send` and `reply` never block and never raise (a message that cannot go is counted and
    dropped); `recv` yields (routing identity, payload, client key) of every frame received.
    """

    @property
    def endpoint(self) -> str: ...  # the endpoint actually bound

    @property
    def stats(self) -> Mapping[str, int]: ...  # counters, shown by `agora members --stats`

    @property
    def peer_count(self) -> int: ...  # open connections to peers

    async def recv(self) -> Received: ...

    def reply(self, identity: Identity, payload: bytes) -> None: ...

    def send(self, addr: str, payload: bytes) -> None: ...

    def send_datagram(self, addr: str, payload: bytes) -> bool: ...  # False: too big, use send

    def serve_datagrams(self, handler: DatagramHandler) -> None: ...

    def reset_peer(self, addr: str) -> None: ...

    def close(self) -> None: ...


class TransportError(Exception):
    """A transport that cannot be set up as asked (the message says why, for a human)."""


class _UdpPortTaken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BindError(TransportError):
    """The listen endpoint cannot be bound: address in use, bad endpoint, no such interface."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot bind {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """This agent's CURVE keys: the server keypair it binds with, and how it dials peers.

    `dial` lists (peer server public key, own client keypair) in order of preference: the
    primary cluster key first, then the keys still accepted during a rotation.
    """

    server_public: bytes
    server_secret: bytes
    dial: tuple[tuple[bytes, bytes, bytes], ...]  # (server public, client public, client secret)
    # every server keypair of the ring (public, secret): a datagram sealed to any is opened
    accept: tuple[tuple[bytes, bytes], ...] = ()

    def datagram_keys(self) -> DatagramKeys:
        """Seal datagrams as this node (the primary dial key) to the primary server key."""
        server_public, public, secret = self.dial[0]
        accept = self.accept or ((self.server_public, self.server_secret),)
        return DatagramKeys(public, secret, server_public, accept)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    sndhwm: int = 64  # messages queued per peer in ZeroMQ before sends fail (then dropped)
    rcvhwm: int = 10_000  # messages queued on the ROUTER before ZeroMQ drops incoming ones
    max_pending: int = 32  # messages held per not-yet-connected peer
    pending_timeout: float = 1.0  # seconds a not-yet-connected peer's messages are held
    max_peers: int = 512  # cached DEALER sockets; the least recently used is closed beyond this
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2_000
    # give up a connect that gets no answer (a silent partition) and dial again after the
    # reconnect interval: the kernel's own SYN backoff reached 16-32 s, so after a heal a
    # stream came back only that long after (seen in namespaces, issue 12)
    connect_timeout_ms: int = 1_000
    datagram_burst: int = 256  # datagrams read per wakeup before other work gets a turn
    coalesce_max: int = 64  # payloads to one peer in one multipart message at most
    recv_drain: int = 64  # messages taken off the ROUTER per wakeup, without awaiting each
    # seconds between looks for a message that waits on the ROUTER while recv waits too: a
    # lost wake-up of ZeroMQ's edge-triggered FD (`_recheck_recv`)
    recv_recheck: float = 1.0


@dataclass(slots=True)
class _Peer:
    sock: zmq.Socket  # a plain (synchronous) socket: sends are immediate, never awaited
    pending: collections.deque[bytes] = field(default_factory=collections.deque)
    flusher: asyncio.Task | None = None
    key_index: int = 0  # which of CurveKeys.dial this socket uses


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
    unexpected frame layout), ``dropped_invalid_addr``, ``send_errors``, ``peers_evicted``,
    ``handshake_failed`` (a connection that failed CURVE: wrong or no key; logged with the
    peer's address), ``redialled`` (a peer tried with the next key of the ring), ``rebinds``,
    ``peers_reset``, ``recv_rewoken`` (a lost wake-up of the ROUTER found); datagrams:
    ``datagrams_sent`` / ``_received``, ``datagram_bytes_sent`` / ``_received``,
    ``datagram_too_big`` (sent on the stream instead), ``datagram_send_errors``,
    ``datagram_bad_addr``, and one counter per reason a received one was refused
    (`gossip.datagram.DatagramError`).
    """

    def __init__(
        self, ctx: zmq.asyncio.Context, endpoint: str, config: TransportConfig,
        keys: CurveKeys | None,
    ) -> None:  # fmt: skip
        self._ctx = ctx
        self.config = config
        self.keys = keys
        self._auth: Authenticator | None = None
        self._background: list[asyncio.Task] = []  # ZAP and handshake watchers, once running
        if keys is not None:
            # ZAP: every CURVE connection passes here; the client key becomes each message's
            # User-Id. Which key may say what is decided per message (gossip.auth.Verifier).
            # Bound before the ROUTER, so no connection is ever accepted without it; served
            # from the agent's loop once it runs (`recv`), handshakes wait until then.
            self._auth = Authenticator(ctx, log=logging.getLogger("agora.zap"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self._peers: collections.OrderedDict[str, _Peer] = collections.OrderedDict()
        self._key_index: dict[str, int] = {}  # peers that answered only on a later key
        self._closed = False
        self.stats: collections.Counter[str] = collections.Counter()
        self._monitor_task: asyncio.Task | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._outbox: dict[str, list[bytes]] = {}  # sent this loop turn, per peer (`_flush_out`)
        self._out_scheduled = False
        self._inbox: collections.deque[Received] = collections.deque()  # drained, not yet taken
        self._waits = 0  # how many times recv has begun to wait on the ROUTER
        self._waiting = False  # recv waits on the ROUTER now
        self._wait_checked = -1  # the wait `_recheck_recv` saw last
        self._recheck: asyncio.TimerHandle | None = None
        try:
            self._router = self._bind_router(endpoint)
        except BaseException:
            self._stop_auth()
            raise
        # the endpoint actually bound (a "*" port is resolved); rebinding reuses it
        self.endpoint = self._router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._codec = DatagramCodec(keys.datagram_keys() if keys is not None else None)
        self._targets: collections.OrderedDict[str, tuple | None] = collections.OrderedDict()
        self._datagram_handler: DatagramHandler | None = None
        self._datagram_loop: asyncio.AbstractEventLoop | None = None
        try:
            self._udp = self._bind_udp(self.endpoint)
        except BaseException:
            self._router.close(0)
            self._stop_auth()
            raise

    @classmethod
    def bind(
        cls, endpoint: str, config: TransportConfig | None = None, keys: CurveKeys | None = None,
    ) -> ZmqTransport:  # fmt: skip
        """Bind the agent's ROUTER and its UDP socket on the same port; raises BindError with
        a human-readable reason. A "*" port is retried until both are free on one port."""
        ctx = zmq.asyncio.Context()
        try:
            for attempt in range(20):
                try:
                    return cls(ctx, endpoint, config or TransportConfig(), keys)
                except _UdpPortTaken as e:
                    if not endpoint.endswith(":*") or attempt == 19:
                        raise BindError(endpoint, e.reason) from None
            raise AssertionError("unreachable")
        except BaseException:
            ctx.term()
            raise

    @staticmethod
    def _bind_udp(endpoint: str) -> socket.socket:
        target = udp_target(endpoint)
        if target is None:
            raise BindError(endpoint, "cannot bind a datagram socket there (use tcp://IP:PORT)")
        host, port = target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise _UdpPortTaken(f"UDP port {port} already in use") from None
            raise BindError(endpoint, f"cannot bind the datagram socket: {e.strerror}") from None
        return sock

    def _bind_router(self, endpoint: str) -> zmq.asyncio.Socket:
        config = self.config
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, config.rcvhwm)
        router.setsockopt(zmq.SNDHWM, config.rcvhwm)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 1024)
        # a reply to a client that has gone away is dropped silently (not an error)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if self.keys is not None:
            router.curve_server = True
            router.curve_publickey = self.keys.server_public
            router.curve_secretkey = self.keys.server_secret
        try:
            router.bind(endpoint)
        except zmq.ZMQError as e:
            router.close(0)
            raise BindError(endpoint, _bind_reason(e)) from None
        if self.keys is not None:
            self._watch_handshakes(router)
        log.debug("bound ROUTER at %s", endpoint)
        return router

    def _watch_handshakes(self, router: zmq.asyncio.Socket) -> None:
        """Count and log connections refused by CURVE (a peer without, or with a wrong, key)."""
        events = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        events |= zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        self._close_monitor()
        self._monitor = router.get_monitor_socket(events)
        if self._background:  # already running: watch the new ROUTER's monitor at once
            self._monitor_task = asyncio.get_running_loop().create_task(
                self._watch_monitor(self._monitor))

    async def _watch_monitor(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                frames = await monitor.recv_multipart()
                if len(frames) != 2:
                    continue
                self.stats["handshake_failed"] += 1
                n = self.stats["handshake_failed"]
                if n <= 5 or n % 100 == 0:
                    log.warning("refused a connection from %s: CURVE handshake failed (no or "
                                "wrong cluster key) [%d so far]",
                                frames[1].decode(errors="replace"), n)  # fmt: skip
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def _serve_zap(self) -> None:
        auth = self._auth
        assert auth is not None and auth.zap_socket is not None
        poller = zmq.asyncio.Poller()  # the authenticator's socket is a plain one
        poller.register(auth.zap_socket, zmq.POLLIN)
        try:
            while True:
                await poller.poll()
                try:
                    request = auth.zap_socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                await auth.handle_zap_message(request)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass
        except Exception:  # noqa: BLE001 - never let the ZAP server die silently
            self.stats["zap_errors"] += 1
            log.exception("ZAP handler failed; new connections will not be authenticated")

    def _start_background(self) -> None:
        """Start serving ZAP and watching handshakes, on the loop that receives."""
        if self._background or self.keys is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._serve_zap()))
        if self._monitor is not None:
            self._monitor_task = loop.create_task(self._watch_monitor(self._monitor))

    def _close_monitor(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            self._monitor_task = None
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._router.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    def set_keys(self, keys: CurveKeys) -> None:
        """Use new keys (a rotation step): rebind if the server key changed, redial peers."""
        if self.keys is None:
            raise TransportError("a plain transport cannot switch to keys; restart the agent")
        old, self.keys = self.keys, keys
        self._codec = DatagramCodec(keys.datagram_keys())
        for peer in self._peers.values():
            self._close_peer(peer)
        self._peers.clear()
        self._key_index.clear()
        if keys.server_secret != old.server_secret:
            self._close_monitor()
            self._router.close(0)
            self._inbox.clear()
            for attempt in range(50):  # the port is free once ZeroMQ's I/O thread closed it
                try:
                    self._router = self._bind_router(self.endpoint)
                    break
                except BindError:
                    if attempt == 49:
                        raise
                    time.sleep(0.01)
            self.stats["rebinds"] += 1

    # ------------------------------------------------------------------ receiving

    async def recv(self) -> Received:
        """The next message: (routing identity, payload, client key). Bad layouts are skipped.

        A DEALER sends ``[payload]`` (the ROUTER prepends the identity); a REQ socket sends
        ``[b"", payload]``. Both are accepted; anything else is counted and dropped.
        """
        self._start_background()
        if self._recheck is None and not self._closed:
            self._recheck = asyncio.get_running_loop().call_later(
                self.config.recv_recheck, self._recheck_recv)  # fmt: skip
        while not self._inbox:
            router = self._router
            self._waits += 1
            self._waiting = True
            try:
                frames = await router.recv_multipart(copy=False)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if router is self._router or self._closed or (task and task.cancelling()):
                    raise
                continue  # the ROUTER was rebound under us (a key rotation)
            finally:
                self._waiting = False
            self._take(frames)
            self._drain(router)
        got = self._inbox.popleft()
        # counted when handed over, not when drained: what `stats` says was received has been
        # dealt with by the time a later message (say, a stats query) is answered
        self.stats["received"] += 1
        self.stats["bytes_received"] += len(got[1])
        return got

    def _recheck_recv(self) -> None:
        """Take a message that has waited on the ROUTER through a whole wait of recv's.

        ZeroMQ's FD is edge-triggered and any operation on the socket consumes its edge;
        one that pyzmq's asyncio socket does not see (a plain shadow's send did, once) leaves
        recv asleep while messages queue, and the agent deaf on its stream while UDP keeps it
        alive. Reading EVENTS through the asyncio socket makes pyzmq take what waits.
        Counted as ``recv_rewoken`` and logged: each is a lost wake-up found."""
        if self._closed:
            return
        self._recheck = asyncio.get_running_loop().call_later(
            self.config.recv_recheck, self._recheck_recv)  # fmt: skip
        same_wait = self._waiting and self._waits == self._wait_checked
        self._wait_checked = self._waits
        if same_wait and self._router.get(zmq.EVENTS) & zmq.POLLIN:
            self.stats["recv_rewoken"] += 1
            log.warning("a message waited on the ROUTER with no wake-up; taken now [%d so far]",
                        self.stats["recv_rewoken"])  # fmt: skip

    def _drain(self, router: zmq.asyncio.Socket) -> None:
        """Take what else is already queued on the ROUTER, without a future per message."""
        sync = zmq.Socket.shadow(router.underlying)
        for _ in range(self.config.recv_drain - 1):
            try:
                frames = sync.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._take(frames)

    def _take(self, frames: list[zmq.Frame]) -> None:
        """Queue the payloads of one ZeroMQ message.

        A peer's DEALER sends ``[payload, payload, ...]`` (coalesced; the ROUTER prepends the
        identity); a REQ socket sends ``[b"", payload]``. Anything else is counted and dropped."""
        if len(frames) == 3 and frames[1].bytes == b"":
            ident, payloads = (frames[0].bytes, b""), frames[2:]
        elif len(frames) >= 2:
            ident, payloads = (frames[0].bytes,), frames[1:]
        else:
            self.stats["dropped_bad_frames"] += 1
            return
        user = ""
        if self.keys is not None:
            try:
                user = payloads[0].get("User-Id")
            except zmq.ZMQError:
                user = ""
        for payload in payloads:
            data = payload.bytes
            if not data:
                self.stats["dropped_bad_frames"] += 1
                continue
            self._inbox.append((ident, data, user))

    def serve_datagrams(self, handler: DatagramHandler) -> None:
        """Call `handler` for every datagram received from now on (from the running loop)."""
        if self._closed:
            return
        self._datagram_handler = handler
        self._datagram_loop = asyncio.get_running_loop()
        self._datagram_loop.add_reader(self._udp.fileno(), self._read_datagrams)

    def _read_datagrams(self) -> None:
        handler = self._datagram_handler
        stats = self.stats
        for _ in range(self.config.datagram_burst):
            try:
                data = self._udp.recv(MAX_DATAGRAM_BYTES + SEALED_OVERHEAD + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ECONNREFUSED reported for an earlier send: keep going
                stats["datagram_recv_errors"] += 1
                log.debug("datagram receive error: %s", e)
                continue
            stats["datagrams_received"] += 1
            stats["datagram_bytes_received"] += len(data)
            try:
                payload, key = self._codec.open(data)
            except DatagramError as e:
                stats[e.reason] += 1
                continue
            if handler is not None:
                handler(payload, key)

    def send_datagram(self, addr: str, payload: bytes) -> bool:
        """Send `payload` to the agent bound at `addr` as one datagram. Never blocks, never
        raises; a datagram the kernel will not take is lost, as on a wire. False (nothing
        sent): it is too big for one datagram, send it on the stream."""
        if self._closed:
            return True
        if not fits(payload):
            self.stats["datagram_too_big"] += 1
            return False
        target = self._target(addr)
        if target is None:
            self.stats["datagram_bad_addr"] += 1
            return True
        data = self._codec.seal(payload)
        try:
            self._udp.sendto(data, target)
        except OSError as e:  # full buffer, unreachable, a family mismatch: lost
            self.stats["datagram_send_errors"] += 1
            log.debug("datagram to %s failed: %s", addr, e)
            return True
        self.stats["datagrams_sent"] += 1
        self.stats["datagram_bytes_sent"] += len(data)
        return True

    def _target(self, addr: str) -> tuple | None:
        """The socket address of `addr` (cached: a host name is resolved once)."""
        if addr in self._targets:
            self._targets.move_to_end(addr)
            return self._targets[addr]
        target: tuple | None = None
        parsed = udp_target(addr)
        if parsed is not None:
            host, port = parsed
            try:
                ip = ipaddress.ip_address(host)
                target = (str(ip), port)
            except ValueError:
                with contextlib.suppress(OSError):
                    info = socket.getaddrinfo(host, port, self._udp.family, socket.SOCK_DGRAM)
                    target = info[0][4] if info else None
            if target is not None and (":" in target[0]) != (self._udp.family == socket.AF_INET6):
                target = None  # an IPv4 socket cannot reach an IPv6 peer, nor the reverse
        self._targets[addr] = target
        if len(self._targets) > self.config.max_peers:
            self._targets.popitem(last=False)
        return target

    def reply(self, identity: Identity, payload: bytes) -> None:
        """Answer a client on the ROUTER. Never blocks; a reply that cannot be queued is dropped.

        Sent through the asyncio ROUTER itself, never a plain shadow of it: ZeroMQ's FD is
        edge-triggered and a send consumes the edge of a message that has just arrived, which
        only the asyncio socket knows to look for again (through a shadow, a `recv` waiting
        meanwhile never woke). A non-blocking send there is settled at once, so the outcome
        is known without awaiting; counted in `stats` as ``replies`` or ``reply_dropped``.
        """
        if self._closed:
            return
        sent = self._router.send_multipart([*identity, payload], flags=zmq.NOBLOCK)
        e = sent.exception()  # done: only blocking sends ever wait
        if e is not None:
            self.stats["reply_dropped"] += 1
            log.debug("reply dropped: %s", e)
            return
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
        sock.setsockopt(zmq.CONNECT_TIMEOUT, self.config.connect_timeout_ms)
        index = self._key_index.get(addr, 0)
        if self.keys is not None:
            server_public, public, secret = self.keys.dial[index % len(self.keys.dial)]
            sock.curve_serverkey = server_public
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        try:
            sock.connect(addr)
        except zmq.ZMQError as e:
            sock.close(0)
            self.stats["dropped_invalid_addr"] += 1
            log.debug("cannot connect to %r: %s", addr, e)
            return None
        peer = _Peer(sock, key_index=index)
        self._peers[addr] = peer
        while len(self._peers) > self.config.max_peers:
            old_addr, old = self._peers.popitem(last=False)
            self._close_peer(old)
            self.stats["peers_evicted"] += 1
            log.debug("evicted idle peer socket %s", old_addr)
        return peer

    def send(self, addr: str, payload: bytes) -> None:
        """Send one message to the agent bound at `addr`. Never blocks, never raises.

        While received messages wait to be handled (a busy agent), it leaves at the end of this
        loop turn, together with the others sent to that peer meanwhile; otherwise at once, so
        that an idle agent adds no delay to a hop."""
        if self._closed:
            return
        if not self._inbox and not self._out_scheduled:
            self._send_now(addr, [payload])
            return
        box = self._outbox.get(addr)
        if box is None:
            self._outbox[addr] = box = []
        box.append(payload)
        if not self._out_scheduled:
            self._out_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        """Send each peer's messages of this loop turn, in order, as few multipart messages."""
        self._out_scheduled = False
        outbox, self._outbox = self._outbox, {}
        if self._closed:
            return
        step = self.config.coalesce_max
        for addr, payloads in outbox.items():
            for i in range(0, len(payloads), step):
                self._send_now(addr, payloads[i : i + step])

    def _send_now(self, addr: str, payloads: list[bytes]) -> None:
        peer = self._peer(addr)
        if peer is None:
            return
        if peer.pending:  # keep order behind messages already waiting for the connection
            for p in payloads:
                self._hold(addr, peer, p)
            return
        try:
            peer.sock.send_multipart(payloads, flags=zmq.NOBLOCK)
        except zmq.Again:
            for p in payloads:
                self._hold(addr, peer, p)
            return
        except zmq.ZMQError as e:
            self.stats["send_errors"] += 1
            log.debug("send to %s failed: %s", addr, e)
            return
        self.stats["sent"] += len(payloads)
        self.stats["stream_messages"] += 1
        self.stats["bytes_sent"] += sum(map(len, payloads))

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
                    self.stats["stream_messages"] += 1
                    self.stats["bytes_sent"] += len(payload)
            if peer.pending:
                self.stats["dropped_timeout"] += len(peer.pending)
                log.debug("dropped %d message(s) to unreachable %s", len(peer.pending), addr)
                peer.pending.clear()
                self._try_next_key(addr, peer)
        except (zmq.ZMQError, asyncio.CancelledError):
            peer.pending.clear()  # socket closed (eviction or shutdown)

    def _try_next_key(self, addr: str, peer: _Peer) -> None:
        """An unreachable peer may serve another key of the ring (mid-rotation): redial."""
        if self.keys is None or len(self.keys.dial) < 2 or self._peers.get(addr) is not peer:
            return
        self._key_index[addr] = (peer.key_index + 1) % len(self.keys.dial)
        if len(self._key_index) > self.config.max_peers:
            self._key_index.pop(next(iter(self._key_index)))
        del self._peers[addr]
        self._close_peer(peer)
        self.stats["redialled"] += 1

    def reset_peer(self, addr: str) -> None:
        """Close the stream to `addr`, dropping whatever is queued for it (counted): the next
        send dials afresh. For a peer just suspected: what waited for it must not arrive late."""
        unsent = self._outbox.pop(addr, None)
        if unsent:
            self.stats["dropped_timeout"] += len(unsent)
        peer = self._peers.pop(addr, None)
        if peer is not None:
            self._close_peer(peer)
            self.stats["peers_reset"] += 1

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
        if self._recheck is not None:
            self._recheck.cancel()
        self._outbox.clear()
        for peer in self._peers.values():
            self._close_peer(peer)
        self._peers.clear()
        self._close_monitor()
        self._router.close(0)
        if self._datagram_loop is not None and not self._datagram_loop.is_closed():
            self._datagram_loop.remove_reader(self._udp.fileno())
        self._udp.close()
        self._stop_auth()
        with contextlib.suppress(zmq.ZMQError):
            self._ctx.term()

    def _stop_auth(self) -> None:
        for task in self._background:
            task.cancel()
        self._background.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
