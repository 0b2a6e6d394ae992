"""The client side of agent queries (used by `agora members`, the local cluster and tests).

A query is one `Query` message sent from a DEALER to the agent's ROUTER; the agent answers on
the same connection with a `QueryReply`. Synchronous and self-contained: every call opens and
closes its own socket, so it is safe from any thread or process.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import zmq

from gossip.messages import Message, Query, QueryReply
from gossip.wire import WireError, decode, encode

_seq = itertools.count(1)


class ClientError(Exception):
    """The agent could not be asked or did not answer (the message is for a human)."""


def _normalize(addr: str) -> str:
    addr = addr.strip()
    return addr if "://" in addr else "tcp://" + addr


def query(addr: str, what: str, timeout: float = 2.0, args: dict | None = None,
          ctx: zmq.Context | None = None) -> Any:  # fmt: skip
    """Ask the agent at `addr` (``tcp://host:port`` or ``host:port``); return the reply data.

    Raises ClientError when there is no answer within `timeout` seconds, when the address is
    invalid, or when the agent answers with an error.
    """
    addr = _normalize(addr)
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        try:
            sock.connect(addr)
        except zmq.ZMQError as e:
            raise ClientError(f"invalid agent address {addr!r}: {e.strerror}") from None
        seq = next(_seq)
        req = Message(f"cli-{os.getpid()}", "", seq, Query(what, args or {}))
        sock.send(encode(req))
        deadline = time.monotonic() + timeout
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not sock.poll(left_ms, zmq.POLLIN):
                raise ClientError(
                    f"no answer from {addr} within {timeout:g} s (is an agent running there?)"
                )
            data = sock.recv()
            try:
                msg = decode(data)
            except WireError as e:
                raise ClientError(f"unreadable answer from {addr}: {e}") from None
            if not isinstance(msg.body, QueryReply) or msg.seq != seq:
                continue  # not ours (a stale reply); keep waiting within the same budget
            if not msg.body.ok:
                raise ClientError(f"{addr} refused the query: {msg.body.error}")
            return msg.body.data
    finally:
        sock.close(0)
