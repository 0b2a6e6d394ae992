"""The simulator's network model as an agent `Transport`: real `Agent` shells (asyncio, wall
clock) exchanging messages in one process, with no sockets, through a `NetworkModel` that
decides each message's delay or loss and applies partitions.

This is the transport seam's third implementation (with ZeroMQ and the fault-rule wrapper): the
agent's own shell — receive loop, tick timer, executor, client queries — runs unchanged on it,
which the deterministic simulator (which drives the cores directly, in virtual time) cannot
show. Useful for tests of the shell and of fault handling without ports or processes.

    net = InProcessNetwork(NetworkModel(latency=0.001))
    agent = Agent(options, net.transport("mem://n0"))
    rows = await net.query("mem://n0", "members")
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from collections.abc import Mapping
from typing import Any

from gossip.messages import Message, Query, QueryReply
from gossip.transport import DatagramHandler, Identity, Received
from gossip.wire import decode, encode
from scenarios.sim.network import NetworkModel


class NetworkTransport:
    """One agent's endpoint on an `InProcessNetwork` (implements `gossip.transport.Transport`)."""

    def __init__(self, net: InProcessNetwork, endpoint: str) -> None:
        self._net = net
        self._endpoint = endpoint
        self._inbox: asyncio.Queue[tuple[Identity, bytes]] = asyncio.Queue()
        self._stats: collections.Counter[str] = collections.Counter()
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def stats(self) -> Mapping[str, int]:
        return self._stats

    @property
    def peer_count(self) -> int:
        return len(self._net.endpoints) - 1

    async def recv(self) -> Received:
        ident, payload = await self._inbox.get()
        self._stats["received"] += 1
        self._stats["bytes_received"] += len(payload)
        return ident, payload, ""  # the in-process network is plain (no keys)

    def deliver(self, identity: Identity, payload: bytes) -> None:
        if not self._closed:
            self._inbox.put_nowait((identity, payload))

    def send(self, addr: str, payload: bytes) -> None:
        """Hand the message to the network model: delivered after its delay, or dropped."""
        if self._closed:
            return
        dst = self._net.endpoints.get(addr)
        if dst is None:
            self._stats["dropped_unknown_addr"] += 1
            return
        delay = self._net.model.transit(self._endpoint, addr)
        if delay < 0:
            self._stats["dropped_network"] += 1
            return
        self._stats["sent"] += 1
        self._stats["bytes_sent"] += len(payload)
        ident = (self._endpoint.encode(),)
        asyncio.get_running_loop().call_later(delay, dst.deliver, ident, payload)

    def send_datagram(self, addr: str, payload: bytes) -> bool:
        """The model already treats every message as a datagram: the same path as `send`."""
        self.send(addr, payload)
        return True

    def serve_datagrams(self, handler: DatagramHandler) -> None:
        """Nothing to serve: datagrams arrive with everything else, through `recv`."""

    def reset_peer(self, addr: str) -> None:
        """No stream to reset: nothing is ever queued for a peer here."""
        self._stats["peers_reset"] += 1

    def reply(self, identity: Identity, payload: bytes) -> None:
        """Answer a client of `InProcessNetwork.query` (clients are never faulted)."""
        fut = self._net.clients.pop(identity, None)
        if fut is not None and not fut.done():
            fut.set_result(payload)
            self._stats["replies"] += 1

    def close(self) -> None:
        self._closed = True
        self._net.endpoints.pop(self._endpoint, None)


class InProcessNetwork:
    """Endpoints of agents in one event loop, joined by a `NetworkModel`."""

    def __init__(self, model: NetworkModel | None = None, seed: int = 0) -> None:
        self.model = model or NetworkModel()
        self.model.bind(random.Random(seed))
        self.endpoints: dict[str, NetworkTransport] = {}
        self.clients: dict[Identity, asyncio.Future[bytes]] = {}
        self._client_ids = itertools.count(1)

    def transport(self, endpoint: str) -> NetworkTransport:
        if endpoint in self.endpoints:
            raise ValueError(f"endpoint {endpoint!r} is already in use")
        t = NetworkTransport(self, endpoint)
        self.endpoints[endpoint] = t
        return t

    async def query(self, addr: str, what: str, args: dict[str, Any] | None = None,
                    timeout: float = 5.0) -> Any:  # fmt: skip
        """What `deploy.client.query` does over ZeroMQ: ask an agent, return its reply data."""
        dst = self.endpoints.get(addr)
        if dst is None:
            raise ConnectionError(f"no agent at {addr}")
        ident = (f"client-{next(self._client_ids)}".encode(),)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.clients[ident] = fut
        dst.deliver(ident, encode(Message("client", "", 1, Query(what, args or {}))))
        try:
            async with asyncio.timeout(timeout):
                payload = await fut
        finally:
            self.clients.pop(ident, None)
        rep = decode(payload).body
        assert isinstance(rep, QueryReply)
        if not rep.ok:
            raise RuntimeError(f"{addr} refused {what}: {rep.error}")
        return rep.data
