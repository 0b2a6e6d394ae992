"""Bytes on the wire by message kind: a core wrapped so that everything it sends is measured.

The simulator counts each node's bytes only in total (and only with `encode_messages`); to say
where an idle cluster's bytes go, `WireMeter` encodes every message its core sends (`gossip.wire`,
exactly as the agent's shell does) and adds the bytes to its kind, and, for bodies that carry
piggybacked gossip or state (`Gossip`, `Sync*`), to the member updates and resource records
inside. It forwards every call to the core unchanged, so the run is the same as without it;
only what `on_message` and `on_tick` return is counted (a `join` or `leave` called through
`Simulator.call` is not).

    meter = WireMeter(core)
    sim.add_node(addr, meter)
    ...
    meter.sent["Ping"].bytes, meter.sent["Ping"].records   # bytes of records inside pings
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gossip import wire
from gossip.effects import MembershipEffect, Outgoing
from gossip.messages import Gossip, Message


@dataclass(slots=True)
class KindBytes:
    """What one node sent of one message kind: messages, their encoded bytes, and how many of
    those bytes are member updates and resource records carried inside."""

    messages: int = 0
    bytes: int = 0
    members: int = 0
    records: int = 0

    def add(self, other: KindBytes) -> None:
        self.messages += other.messages
        self.bytes += other.bytes
        self.members += other.members
        self.records += other.records


def _without(msg: Message, **fields: Any) -> int:
    return len(wire.encode(dataclasses.replace(msg, body=dataclasses.replace(msg.body, **fields))))


def measure(msg: Message) -> KindBytes:
    """One message's bytes and the member updates' and records' share of them (each share is the
    message's size minus its size without them)."""
    size = len(wire.encode(msg))
    body = msg.body
    members = records = 0
    gossip = getattr(body, "gossip", None)
    if isinstance(gossip, Gossip):
        if gossip.members:
            members = size - _without(msg, gossip=Gossip((), gossip.resources))
        if gossip.resources:
            records = size - _without(msg, gossip=Gossip(gossip.members, ()))
    else:
        if getattr(body, "members", ()):
            members = size - _without(msg, members=())
        if getattr(body, "resources", ()):
            records = size - _without(msg, resources=())
    return KindBytes(1, size, members, records)


class WireMeter:
    """A core whose outgoing messages are measured by kind (`sent`); otherwise the core itself."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.sent: defaultdict[str, KindBytes] = defaultdict(KindBytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def _count(self, out: list[MembershipEffect] | None) -> list[MembershipEffect] | None:
        for o in out or ():
            if isinstance(o, Outgoing):  # the other effects send nothing
                self.sent[type(o.msg.body).__name__].add(measure(o.msg))
        return out

    def on_message(self, now: float, msg: Message) -> list[MembershipEffect] | None:
        return self._count(self.core.on_message(now, msg))

    def on_tick(self, now: float) -> list[MembershipEffect] | None:
        return self._count(self.core.on_tick(now))

    def reset(self) -> None:
        self.sent.clear()
