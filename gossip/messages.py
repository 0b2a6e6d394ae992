"""Typed protocol messages: what cores produce and consume, independent of the byte encoding.

Cores only ever see these dataclasses; `gossip.wire` turns them into bytes and back and is the
single place where untrusted input is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

PROTOCOL_VERSION = 1


class Kind(IntEnum):
    """Message kinds on the wire. Values are part of the protocol: never renumber."""

    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    SYNC = 5
    SYNC_REPLY = 6
    GOSSIP = 7
    # client requests (CLI -> any agent), answered on the same connection
    QUERY = 32
    QUERY_REPLY = 33


class Status(IntEnum):
    """A member's state as one node believes it. Values are part of the protocol."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return {0: "alive", 1: "suspect", 2: "failed", 3: "left"}[int(self)]


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """One claim about a member: newer incarnation wins, then the stronger status."""

    node: str
    addr: str
    incarnation: int
    status: Status
    by: str = ""  # who raised a suspicion or declared a failure (Lifeguard counts distinct ones)


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A node's published resource state. Higher `version` wins; only its owner bumps it."""

    node: str
    version: int
    cpus: float = 0.0
    memory: int = 0  # bytes
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    alloc_cpus: float = 0.0
    alloc_memory: int = 0
    alloc_gpus: int = 0
    load: float = 0.0  # observed CPU utilisation, 0..1
    mem_load: float = 0.0  # observed memory utilisation, 0..1
    forecast: tuple[float, ...] = ()  # predicted load for the next steps (filled by the forecaster)


@dataclass(frozen=True, slots=True)
class Gossip:
    """Piggybacked dissemination: membership changes and resource records."""

    members: tuple[MemberUpdate, ...] = ()
    resources: tuple[ResourceRecord, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.members or self.resources)


@dataclass(frozen=True, slots=True)
class Ping:
    target: str
    gossip: Gossip = Gossip()


@dataclass(frozen=True, slots=True)
class Ack:
    target: str  # the node that was probed (the sender of the ack, or the relayed target)
    gossip: Gossip = Gossip()


@dataclass(frozen=True, slots=True)
class PingReq:
    target: str
    target_addr: str
    gossip: Gossip = Gossip()


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the relay could not reach the target, but the requester's link to it works."""

    target: str


@dataclass(frozen=True, slots=True)
class Sync:
    """Push-pull anti-entropy (and join): the sender's full view."""

    members: tuple[MemberUpdate, ...]
    resources: tuple[ResourceRecord, ...]
    join: bool = False


@dataclass(frozen=True, slots=True)
class SyncReply:
    members: tuple[MemberUpdate, ...]
    resources: tuple[ResourceRecord, ...]


@dataclass(frozen=True, slots=True)
class GossipOnly:
    gossip: Gossip


@dataclass(frozen=True, slots=True)
class Query:
    """A client request, e.g. what="members" or "stats"."""

    what: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryReply:
    ok: bool
    data: object = None
    error: str = ""


Body = Ping | Ack | PingReq | Nack | Sync | SyncReply | GossipOnly | Query | QueryReply

KIND_OF_BODY: dict[type, Kind] = {
    Ping: Kind.PING,
    Ack: Kind.ACK,
    PingReq: Kind.PING_REQ,
    Nack: Kind.NACK,
    Sync: Kind.SYNC,
    SyncReply: Kind.SYNC_REPLY,
    GossipOnly: Kind.GOSSIP,
    Query: Kind.QUERY,
    QueryReply: Kind.QUERY_REPLY,
}


@dataclass(frozen=True, slots=True)
class Message:
    """The envelope. `seq` matches probes to acks; `sender_addr` is where replies go."""

    sender: str
    sender_addr: str
    seq: int
    body: Body

    @property
    def kind(self) -> Kind:
        return KIND_OF_BODY[type(self.body)]


class Outgoing(NamedTuple):
    """A core's directive to its shell: send `msg` to the agent bound at `addr`."""

    addr: str
    msg: Message
