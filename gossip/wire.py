"""msgpack encoding of `gossip.messages`, and the validation of everything that arrives.

Envelope: a msgpack array ``[version, kind, sender_id, sender_addr, seq, body]`` where body is
a kind-specific array. `decode` enforces a byte limit, msgpack container limits and the exact
shape and types of every field; anything else raises `WireError`, which receivers count and
drop. Nothing else may escape `decode`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack

from gossip.messages import (
    PROTOCOL_VERSION,
    Ack,
    Gossip,
    GossipOnly,
    Kind,
    MemberUpdate,
    Message,
    Nack,
    Ping,
    PingReq,
    Query,
    QueryReply,
    ResourceRecord,
    Status,
    Sync,
    SyncReply,
)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_ID_LEN = 256  # node ids, addresses, label keys and values
MAX_LABELS = 64
MAX_FORECAST = 256
MAX_ITEMS = 100_000  # members or resource records in one message
MAX_INT = 2**63 - 1


class WireError(ValueError):
    """A message that is malformed, oversized, of another version or of an unknown kind."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short, stable category used as a counter name


# ---------------------------------------------------------------- encoding


def _member(m: MemberUpdate) -> list:
    return [m.node, m.addr, m.incarnation, int(m.status), m.by]


def _resource(r: ResourceRecord) -> list:
    return [
        r.node, r.version, float(r.cpus), int(r.memory), int(r.gpus), dict(r.labels),
        float(r.alloc_cpus), int(r.alloc_memory), int(r.alloc_gpus), float(r.load),
        float(r.mem_load), [float(x) for x in r.forecast],
    ]  # fmt: skip


def _gossip(g: Gossip) -> list:
    return [[_member(m) for m in g.members], [_resource(r) for r in g.resources]]


def _body(body: Any) -> list:
    match body:
        case Ping(target, gossip) | Ack(target, gossip):
            return [target, _gossip(gossip)]
        case PingReq(target, target_addr, gossip):
            return [target, target_addr, _gossip(gossip)]
        case Nack(target):
            return [target]
        case Sync(members, resources, join):
            return [[_member(m) for m in members], [_resource(r) for r in resources], join]
        case SyncReply(members, resources):
            return [[_member(m) for m in members], [_resource(r) for r in resources]]
        case GossipOnly(gossip):
            return [_gossip(gossip)]
        case Query(what, args):
            return [what, args]
        case QueryReply(ok, data, error):
            return [ok, data, error]
    raise TypeError(f"not a message body: {body!r}")


def encode(msg: Message) -> bytes:
    """Serialize one message. Raises WireError if the result would exceed the size limit."""
    out = msgpack.packb(
        [PROTOCOL_VERSION, int(msg.kind), msg.sender, msg.sender_addr, msg.seq, _body(msg.body)],
        use_bin_type=True,
    )
    if len(out) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(out)} bytes")
    return out


# ---------------------------------------------------------------- decoding


def _fail(what: str, value: Any) -> WireError:
    return WireError("malformed", f"{what}: got {type(value).__name__}")


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_ID_LEN:
        raise _fail(what, v)
    return v


def _id(v: Any, what: str) -> str:
    s = _str(v, what)
    if not s:
        raise WireError("malformed", f"{what}: empty")
    return s


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(what, v)
    return v


def _num(v: Any, what: str, lo: float = 0.0, hi: float = 1e18) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise _fail(what, v)
    return float(v)


def _list(v: Any, what: str, n: int | None = None, most: int = MAX_ITEMS) -> list:
    if not isinstance(v, list) or (n is not None and len(v) != n) or len(v) > most:
        raise _fail(what, v)
    return v


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(what, v)
    return v


def _decode_member(v: Any) -> MemberUpdate:
    node, addr, inc, status, by = _list(v, "member", 5)
    try:
        st = Status(_int(status, "member.status", 0, 3))
    except ValueError as e:  # pragma: no cover - range checked above
        raise WireError("malformed", "member.status") from e
    return MemberUpdate(_id(node, "member.node"), _id(addr, "member.addr"),
                        _int(inc, "member.incarnation"), st, _str(by, "member.by"))  # fmt: skip


def _decode_labels(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_LABELS:
        raise _fail("labels", v)
    return {_id(k, "label key"): _str(x, "label value") for k, x in v.items()}


def _decode_resource(v: Any) -> ResourceRecord:
    f = _list(v, "resource", 12)
    forecast = _list(f[11], "resource.forecast", most=MAX_FORECAST)
    return ResourceRecord(
        node=_id(f[0], "resource.node"),
        version=_int(f[1], "resource.version"),
        cpus=_num(f[2], "resource.cpus"),
        memory=_int(f[3], "resource.memory"),
        gpus=_int(f[4], "resource.gpus"),
        labels=_decode_labels(f[5]),
        alloc_cpus=_num(f[6], "resource.alloc_cpus"),
        alloc_memory=_int(f[7], "resource.alloc_memory"),
        alloc_gpus=_int(f[8], "resource.alloc_gpus"),
        load=_num(f[9], "resource.load", 0.0, 1e6),
        mem_load=_num(f[10], "resource.mem_load", 0.0, 1e6),
        forecast=tuple(_num(x, "resource.forecast[]", -1e6, 1e6) for x in forecast),
    )


def _decode_members(v: Any) -> tuple[MemberUpdate, ...]:
    return tuple(_decode_member(m) for m in _list(v, "members"))


def _decode_resources(v: Any) -> tuple[ResourceRecord, ...]:
    return tuple(_decode_resource(r) for r in _list(v, "resources"))


def _decode_gossip(v: Any) -> Gossip:
    members, resources = _list(v, "gossip", 2)
    return Gossip(_decode_members(members), _decode_resources(resources))


def _ping(b: list) -> Ping:
    target, g = _list(b, "ping", 2)
    return Ping(_id(target, "ping.target"), _decode_gossip(g))


def _ack(b: list) -> Ack:
    target, g = _list(b, "ack", 2)
    return Ack(_id(target, "ack.target"), _decode_gossip(g))


def _ping_req(b: list) -> PingReq:
    target, addr, g = _list(b, "ping_req", 3)
    return PingReq(_id(target, "ping_req.target"), _id(addr, "ping_req.addr"), _decode_gossip(g))


def _nack(b: list) -> Nack:
    (target,) = _list(b, "nack", 1)
    return Nack(_id(target, "nack.target"))


def _sync(b: list) -> Sync:
    members, resources, join = _list(b, "sync", 3)
    return Sync(_decode_members(members), _decode_resources(resources), _bool(join, "sync.join"))


def _sync_reply(b: list) -> SyncReply:
    members, resources = _list(b, "sync_reply", 2)
    return SyncReply(_decode_members(members), _decode_resources(resources))


def _gossip_only(b: list) -> GossipOnly:
    (g,) = _list(b, "gossip", 1)
    return GossipOnly(_decode_gossip(g))


def _query(b: list) -> Query:
    what, args = _list(b, "query", 2)
    if not isinstance(args, dict):
        raise _fail("query.args", args)
    return Query(_id(what, "query.what"), args)


def _query_reply(b: list) -> QueryReply:
    ok, data, error = _list(b, "query_reply", 3)
    if not isinstance(error, str):
        raise _fail("query_reply.error", error)
    return QueryReply(_bool(ok, "query_reply.ok"), data, error)


_DECODERS: dict[Kind, Callable[[list], Any]] = {
    Kind.PING: _ping,
    Kind.ACK: _ack,
    Kind.PING_REQ: _ping_req,
    Kind.NACK: _nack,
    Kind.SYNC: _sync,
    Kind.SYNC_REPLY: _sync_reply,
    Kind.GOSSIP: _gossip_only,
    Kind.QUERY: _query,
    Kind.QUERY_REPLY: _query_reply,
}


def decode(data: bytes) -> Message:
    """Parse and validate one message from untrusted bytes; raises only WireError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("malformed", "not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(data)} bytes")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_MESSAGE_BYTES,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises many types (ExtraData, ValueError, StackError...)
        raise WireError("undecodable", type(e).__name__) from None
    if not isinstance(raw, list) or len(raw) != 6:
        raise WireError("malformed", "envelope is not a 6-element array")
    version, kind, sender, sender_addr, seq, body = raw
    if version != PROTOCOL_VERSION:
        raise WireError("wrong_version", repr(version)[:32])
    if type(kind) is not int or kind not in Kind._value2member_map_:
        raise WireError("unknown_kind", repr(kind)[:32])
    try:
        return Message(
            sender=_id(sender, "sender"),
            sender_addr=_str(sender_addr, "sender_addr"),
            seq=_int(seq, "seq"),
            body=_DECODERS[Kind(kind)](_list(body, "body")),
        )
    except WireError:
        raise
    except (ValueError, TypeError) as e:  # wrong arity while unpacking a body array
        raise WireError("malformed", str(e)[:80]) from None
