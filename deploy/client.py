"""The client side of agent queries (used by `agora members`, the local cluster and tests).

A query is one `Query` message sent from a DEALER to the agent's ROUTER; the agent answers on
the same connection with a `QueryReply`. Synchronous and self-contained: every call opens and
closes its own socket, so it is safe from any thread or process.

On a keyed cluster a query goes over CURVE with a client credential (`gossip.auth.Credential`):
passed to `query`, or set once for the process with `use_credential` (the CLI's ``--key``).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import zmq

from gossip.auth import Credential
from gossip.messages import Message, Query, QueryReply
from gossip.wire import WireError, decode, encode

_seq = itertools.count(1)
_credential: Credential | None = None


def use_credential(credential: Credential | None) -> None:
    """The credential every later `query` of this process uses unless given another."""
    global _credential
    _credential = credential


class ClientError(Exception):
    """The agent could not be asked or did not answer (the message is for a human)."""


class NoAnswer(ClientError):
    """Nothing came back within the timeout: the request may or may not have been carried out."""


class QueryRefused(ClientError):
    """The agent answered with an error; `error` is its text alone (e.g. "unknown task id ...")."""

    def __init__(self, addr: str, error: str) -> None:
        super().__init__(f"{addr} refused the query: {error}")
        self.addr = addr
        self.error = error


def _normalize(addr: str) -> str:
    addr = addr.strip()
    return addr if "://" in addr else "tcp://" + addr


def query(addr: str, what: str, timeout: float = 2.0, args: dict | None = None,
          ctx: zmq.Context | None = None, credential: Credential | None = None) -> Any:  # fmt: skip
    """Ask the agent at `addr` (``tcp://host:port`` or ``host:port``); return the reply data.

    Raises ClientError when there is no answer within `timeout` seconds (NoAnswer), when the
    address is invalid, or when the agent answers with an error (QueryRefused).
    """
    addr = _normalize(addr)
    ctx = ctx or zmq.Context.instance()
    credential = credential or _credential
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sender = f"cli-{os.getpid()}"
    if credential is not None:
        sock.curve_serverkey = credential.server_public
        sock.curve_publickey = credential.keypair.public
        sock.curve_secretkey = credential.keypair.secret
        sender = credential.sender
    try:
        try:
            sock.connect(addr)
        except zmq.ZMQError as e:
            raise ClientError(f"invalid agent address {addr!r}: {e.strerror}") from None
        seq = next(_seq)
        req = Message(sender, "", seq, Query(what, args or {}))
        try:
            payload = encode(req)
        except (WireError, TypeError, ValueError) as e:  # too large, or not msgpack-able
            raise ClientError(f"cannot send the {what} request: {e}") from None
        sock.send(payload)
        deadline = time.monotonic() + timeout
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not sock.poll(left_ms, zmq.POLLIN):
                hint = ("is an agent running there, with the cluster key this credential is for?"
                        if credential is not None else
                        "is an agent running there? a keyed agent needs --key")
                raise NoAnswer(f"no answer from {addr} within {timeout:g} s ({hint})")
            data = sock.recv()
            try:
                msg = decode(data)
            except WireError as e:
                raise ClientError(f"unreadable answer from {addr}: {e}") from None
            if not isinstance(msg.body, QueryReply) or msg.seq != seq:
                continue  # not ours (a stale reply); keep waiting within the same budget
            if not msg.body.ok:
                raise QueryRefused(addr, msg.body.error)
            return msg.body.data
    finally:
        sock.close(0)
