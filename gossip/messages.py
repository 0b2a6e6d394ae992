"""The gossip layer's messages — membership, dissemination, client queries — with their wire
form and registration, and the envelope every kind rides in.

Cores only ever see these dataclasses. Each kind is registered once (`gossip.kinds`) beside its
dataclass, with its encoder and its decoder; a decoder reads untrusted input only through
`gossip.fields`, so a malformed field raises `WireError`. `gossip.wire` puts a body in the
envelope and turns it into bytes. Placement and task kinds are the agent's (`agent.messages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from gossip.fields import (
    array,
    boolean,
    fail,
    ident,
    integer,
    label_table,
    number,
    text,
)
from gossip.kinds import CLIENT, MEMBERSHIP, Kind, kind_of, register

# 2: task specs name their submitter; 3: loads in thousandths (below); 4: push-pull sends a
# digest first and then only the entries that differ (Sync, SyncReply, SyncPush); 5: an entry
# sends a new task record to its owner alone (TaskPut.submission, TaskPutAck.all_replicas);
# 6: TaskPutAck.submitted (an owner places a new task before it answers for its replicas)
PROTOCOL_VERSION = 6

# Loads and forecasts in resource records are kept, and sent, in thousandths: one or two bytes
# each on the wire instead of nine (most of a record), and finer than any placement decision.
LOAD_STEPS = 1000

MAX_FORECAST = 256
MAX_LOAD_STEPS = 10**9  # |load|, |forecast| up to 1e6, in thousandths (`LOAD_STEPS`)
MAX_NODE_CPUS = 1e18  # the cpus a resource record may offer or have allocated


def quantized(x: float) -> float:
    """`x` as a resource record holds it: the wire carries round(x * LOAD_STEPS) exactly."""
    return round(x * LOAD_STEPS) / LOAD_STEPS


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


# ---------------------------------------------------------------- their wire form


def _steps(x: float) -> int:
    return round(float(x) * LOAD_STEPS)


def _encode_member(m: MemberUpdate) -> list:
    return [m.node, m.addr, m.incarnation, int(m.status), m.by]


def _encode_resource(r: ResourceRecord) -> list:
    return [
        r.node, r.version, _cpus(r.cpus), int(r.memory), int(r.gpus), dict(r.labels),
        _cpus(r.alloc_cpus), int(r.alloc_memory), int(r.alloc_gpus), _steps(r.load),
        _steps(r.mem_load), [_steps(x) for x in r.forecast],
    ]  # fmt: skip


def _cpus(x: float) -> float | int:
    """A whole number of CPUs as an integer: 1 byte where a float takes 9 (the decoder takes
    either, as a float)."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) <= 2**53 else x


def _encode_members(ms: tuple[MemberUpdate, ...]) -> list:
    return [_encode_member(m) for m in ms]


def _encode_resources(rs: tuple[ResourceRecord, ...]) -> list:
    return [_encode_resource(r) for r in rs]


def _encode_gossip(g: Gossip) -> list:
    return [_encode_members(g.members), _encode_resources(g.resources)]


def _status(v: Any, what: str) -> Status:
    return Status(integer(v, what, 0, max(Status)))


def _decode_member(v: Any) -> MemberUpdate:
    node, addr, inc, status, by = array(v, "member", 5)
    return MemberUpdate(ident(node, "member.node"), ident(addr, "member.addr"),
                        integer(inc, "member.incarnation"), _status(status, "member.status"),
                        text(by, "member.by"))  # fmt: skip


def _decode_resource(v: Any) -> ResourceRecord:
    f = array(v, "resource", 12)
    forecast = array(f[11], "resource.forecast", most=MAX_FORECAST)
    return ResourceRecord(
        node=ident(f[0], "resource.node"),
        version=integer(f[1], "resource.version"),
        cpus=number(f[2], "resource.cpus", 0.0, MAX_NODE_CPUS),
        memory=integer(f[3], "resource.memory"),
        gpus=integer(f[4], "resource.gpus"),
        labels=label_table(f[5]),
        alloc_cpus=number(f[6], "resource.alloc_cpus", 0.0, MAX_NODE_CPUS),
        alloc_memory=integer(f[7], "resource.alloc_memory"),
        alloc_gpus=integer(f[8], "resource.alloc_gpus"),
        load=integer(f[9], "resource.load", 0, MAX_LOAD_STEPS) / LOAD_STEPS,
        mem_load=integer(f[10], "resource.mem_load", 0, MAX_LOAD_STEPS) / LOAD_STEPS,
        forecast=tuple(integer(x, "resource.forecast[]", -MAX_LOAD_STEPS, MAX_LOAD_STEPS)
                       / LOAD_STEPS for x in forecast),  # fmt: skip
    )


def _decode_members(v: Any) -> tuple[MemberUpdate, ...]:
    return tuple(_decode_member(m) for m in array(v, "members"))


def _decode_resources(v: Any) -> tuple[ResourceRecord, ...]:
    return tuple(_decode_resource(r) for r in array(v, "resources"))


def _decode_gossip(v: Any) -> Gossip:
    members, resources = array(v, "gossip", 2)
    return Gossip(_decode_members(members), _decode_resources(resources))


# ---------------------------------------------------------------- the envelope


@dataclass(frozen=True, slots=True)
class Message:
    """The envelope. `seq` matches probes to acks; `sender_addr` is where replies go."""

    sender: str
    sender_addr: str
    seq: int
    body: Any  # an instance of a registered kind's body class

    @property
    def kind(self) -> Kind:
        return kind_of(self.body)


# ---------------------------------------------------------------- membership kinds
#
# Failure detection and its dissemination ride datagrams (UDP), as memberlist's do: one lost is
# lost, never delivered seconds late behind a stalled stream (TCP turns silent loss into
# retransmission delay, and a partition into a burst of stale news at the heal). State exchange
# (Sync) rides each peer's ZeroMQ stream, as do placement and client queries.


@dataclass(frozen=True, slots=True)
class Ping:
    target: str
    gossip: Gossip = Gossip()


@dataclass(frozen=True, slots=True)
class Ack:
    target: str  # the node that was probed (the sender of the ack, or the relayed target)
    gossip: Gossip = Gossip()


def _encode_probe(b: Ping | Ack) -> list:
    return [b.target, _encode_gossip(b.gossip)]


def _decode_ping(b: list) -> Ping:
    target, g = array(b, "ping", 2)
    return Ping(ident(target, "ping.target"), _decode_gossip(g))


def _decode_ack(b: list) -> Ack:
    target, g = array(b, "ack", 2)
    return Ack(ident(target, "ack.target"), _decode_gossip(g))


register(1, "PING", Ping, _encode_probe, _decode_ping, handler=MEMBERSHIP, datagram=True)
register(2, "ACK", Ack, _encode_probe, _decode_ack, handler=MEMBERSHIP, datagram=True)


@dataclass(frozen=True, slots=True)
class PingReq:
    target: str
    target_addr: str
    gossip: Gossip = Gossip()


def _encode_ping_req(b: PingReq) -> list:
    return [b.target, b.target_addr, _encode_gossip(b.gossip)]


def _decode_ping_req(b: list) -> PingReq:
    target, addr, g = array(b, "ping_req", 3)
    return PingReq(ident(target, "ping_req.target"), ident(addr, "ping_req.addr"),
                   _decode_gossip(g))  # fmt: skip


register(3, "PING_REQ", PingReq, _encode_ping_req, _decode_ping_req, handler=MEMBERSHIP,
         datagram=True)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the relay could not reach the target, but the requester's link to it works."""

    target: str


def _encode_nack(b: Nack) -> list:
    return [b.target]


def _decode_nack(b: list) -> Nack:
    (target,) = array(b, "nack", 1)
    return Nack(ident(target, "nack.target"))


register(4, "NACK", Nack, _encode_nack, _decode_nack, handler=MEMBERSHIP, datagram=True)


@dataclass(frozen=True, slots=True)
class Digest:
    """One member as a push-pull summarises it: enough to tell whose copy is newer, and a few
    bytes however large its resource record is."""

    node: str
    incarnation: int
    status: Status
    version: int  # of its resource record; 0 = none held


@dataclass(frozen=True, slots=True)
class Sync:
    """Push-pull anti-entropy (and join), 1 of 3: a digest of the sender's whole view. Nothing
    in it is taken in; it only says what to send."""

    digest: tuple[Digest, ...]
    join: bool = False


def _encode_sync(b: Sync) -> list:
    return [[[d.node, d.incarnation, int(d.status), d.version] for d in b.digest], b.join]


def _decode_digest(v: Any) -> Digest:
    node, inc, status, version = array(v, "digest", 4)
    return Digest(ident(node, "digest.node"), integer(inc, "digest.incarnation"),
                  _status(status, "digest.status"), integer(version, "digest.version"))  # fmt: skip


def _decode_sync(b: list) -> Sync:
    digest, join = array(b, "sync", 2)
    return Sync(tuple(_decode_digest(d) for d in array(digest, "sync.digest")),
                boolean(join, "sync.join"))  # fmt: skip


register(5, "SYNC", Sync, _encode_sync, _decode_sync, handler=MEMBERSHIP)


@dataclass(frozen=True, slots=True)
class SyncReply:
    """2 of 3: in full, what the Sync's digest lacked or held older; by id, the members and
    records it held newer, for the third message."""

    members: tuple[MemberUpdate, ...]
    resources: tuple[ResourceRecord, ...]
    want_members: tuple[str, ...] = ()
    want_resources: tuple[str, ...] = ()


def _encode_sync_reply(b: SyncReply) -> list:
    return [_encode_members(b.members), _encode_resources(b.resources), list(b.want_members),
            list(b.want_resources)]  # fmt: skip


def _ids(v: Any, what: str) -> tuple[str, ...]:
    return tuple(ident(x, what) for x in array(v, what))


def _decode_sync_reply(b: list) -> SyncReply:
    members, resources, want_members, want_resources = array(b, "sync_reply", 4)
    return SyncReply(_decode_members(members), _decode_resources(resources),
                     _ids(want_members, "sync_reply.want_members[]"),
                     _ids(want_resources, "sync_reply.want_resources[]"))  # fmt: skip


register(6, "SYNC_REPLY", SyncReply, _encode_sync_reply, _decode_sync_reply, handler=MEMBERSHIP)


@dataclass(frozen=True, slots=True)
class SyncPush:
    """3 of 3: the entries a SyncReply asked for."""

    members: tuple[MemberUpdate, ...]
    resources: tuple[ResourceRecord, ...]


def _encode_sync_push(b: SyncPush) -> list:
    return [_encode_members(b.members), _encode_resources(b.resources)]


def _decode_sync_push(b: list) -> SyncPush:
    members, resources = array(b, "sync_push", 2)
    return SyncPush(_decode_members(members), _decode_resources(resources))


register(8, "SYNC_PUSH", SyncPush, _encode_sync_push, _decode_sync_push, handler=MEMBERSHIP)


@dataclass(frozen=True, slots=True)
class GossipOnly:
    gossip: Gossip


def _encode_gossip_only(b: GossipOnly) -> list:
    return [_encode_gossip(b.gossip)]


def _decode_gossip_only(b: list) -> GossipOnly:
    (g,) = array(b, "gossip", 1)
    return GossipOnly(_decode_gossip(g))


register(7, "GOSSIP", GossipOnly, _encode_gossip_only, _decode_gossip_only, handler=MEMBERSHIP,
         datagram=True)  # fmt: skip


# ---------------------------------------------------------------- client kinds
#
# A client (the CLI) asks any agent, which answers on the same connection.


@dataclass(frozen=True, slots=True)
class Query:
    """A client request, e.g. what="members" or "stats"."""

    what: str
    args: dict = field(default_factory=dict)


def _encode_query(b: Query) -> list:
    return [b.what, b.args]


def _decode_query(b: list) -> Query:
    what, args = array(b, "query", 2)
    if not isinstance(args, dict):
        raise fail("query.args", args)
    return Query(ident(what, "query.what"), args)


register(32, "QUERY", Query, _encode_query, _decode_query, handler=CLIENT)


@dataclass(frozen=True, slots=True)
class QueryReply:
    ok: bool
    data: object = None
    error: str = ""


def _encode_query_reply(b: QueryReply) -> list:
    return [b.ok, b.data, b.error]


def _decode_query_reply(b: list) -> QueryReply:
    ok, data, error = array(b, "query_reply", 3)
    if not isinstance(error, str):
        raise fail("query_reply.error", error)
    return QueryReply(boolean(ok, "query_reply.ok"), data, error)


register(33, "QUERY_REPLY", QueryReply, _encode_query_reply, _decode_query_reply, handler=CLIENT)
