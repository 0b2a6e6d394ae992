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
    LOAD_STEPS,
    PROTOCOL_VERSION,
    Ack,
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Digest,
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
    Release,
    ReportAck,
    ResourceRecord,
    Status,
    Sync,
    SyncPush,
    SyncReply,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskPut,
    TaskPutAck,
    TaskRecord,
    TaskReport,
    TaskSpec,
    TaskState,
)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_ID_LEN = 256  # node ids, addresses, label keys and values
MAX_LABELS = 64
MAX_FORECAST = 256
MAX_LOAD_STEPS = 10**9  # |load|, |forecast| up to 1e6, in thousandths (`LOAD_STEPS`)
MAX_ITEMS = 100_000  # members or resource records in one message
MAX_INT = 2**63 - 1

# tasks (string lengths count characters, like MAX_ID_LEN; task ids are bounded by MAX_ID_LEN)
MAX_ARGV = 4096  # entries in a task's argv (at least one: the program)
MAX_ARG_LEN = 64 * 1024  # one argv entry
MAX_ENV = 256  # entries in a task's env (keys are bounded by MAX_ID_LEN)
MAX_ENV_VALUE_LEN = 64 * 1024
MAX_CWD_LEN = 4096
MAX_REASON_LEN = 4096  # reason / error strings
MAX_OUTPUT_TAIL = 64 * 1024  # stdout / stderr tails, each
MAX_REPLICAS = 64  # node ids in a task record's replica set
MAX_LIST_RECORDS = 10_000  # records in one TaskListReply, and the largest TaskList.limit
MAX_TASK_CPUS = 1e6
MAX_NODE_CPUS = 1e18  # the cpus a resource record may offer or have allocated
MAX_DURATION = 1e9  # seconds: timeout, deadline, expected
MAX_TIME = 1e12  # timestamps (submitted, placed, started, finished), seconds since the epoch
MIN_EXIT_CODE, MAX_EXIT_CODE = -(2**31), 2**31 - 1
MAX_HEADROOM = 1e6  # |Bid.headroom|, in CPUs
MAX_BID_LOAD = 1e6


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
        r.node, r.version, _cpus(r.cpus), int(r.memory), int(r.gpus), dict(r.labels),
        _cpus(r.alloc_cpus), int(r.alloc_memory), int(r.alloc_gpus), _steps(r.load),
        _steps(r.mem_load), [_steps(x) for x in r.forecast],
    ]  # fmt: skip


def _cpus(x: float) -> float | int:
    """A whole number of CPUs as an integer: 1 byte where a float takes 9 (the decoder takes
    either, as a float)."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) <= 2**53 else x


def _digest(d: Digest) -> list:
    return [d.node, d.incarnation, int(d.status), d.version]


def _gossip(g: Gossip) -> list:
    return [[_member(m) for m in g.members], [_resource(r) for r in g.resources]]


def _steps(x: float) -> int:
    return round(float(x) * LOAD_STEPS)


def _task_spec(s: TaskSpec) -> list:
    return [
        list(s.argv), float(s.cpus), int(s.memory), int(s.gpus), dict(s.labels), dict(s.env),
        s.cwd, float(s.timeout), float(s.deadline), float(s.expected), s.submitter,
    ]  # fmt: skip


def _task_record(r: TaskRecord) -> list:
    return [
        r.id, _task_spec(r.spec), int(r.state), r.version, r.writer, list(r.replicas),
        r.attempt, r.node, r.node_addr, int(r.exit_code), r.reason, float(r.submitted),
        float(r.placed), float(r.started), float(r.finished), r.stdout, r.stderr,
        r.node_generation,
    ]  # fmt: skip


def _body(body: Any) -> list:
    match body:
        case Ping(target, gossip) | Ack(target, gossip):
            return [target, _gossip(gossip)]
        case PingReq(target, target_addr, gossip):
            return [target, target_addr, _gossip(gossip)]
        case Nack(target):
            return [target]
        case Sync(digest, join):
            return [[_digest(d) for d in digest], join]
        case SyncReply(members, resources, want_members, want_resources):
            return [[_member(m) for m in members], [_resource(r) for r in resources],
                    list(want_members), list(want_resources)]  # fmt: skip
        case SyncPush(members, resources):
            return [[_member(m) for m in members], [_resource(r) for r in resources]]
        case GossipOnly(gossip):
            return [_gossip(gossip)]
        case Query(what, args):
            return [what, args]
        case QueryReply(ok, data, error):
            return [ok, data, error]
        case TaskPut(record):
            return [_task_record(record)]
        case TaskPutAck(task_id, version, state, ok, error):
            return [task_id, version, int(state), ok, error]
        case TaskGet(task_id, req) | TaskCancel(task_id, req):
            return [task_id, req]
        case TaskGetReply(task_id, req, record):
            return [task_id, req, None if record is None else _task_record(record)]
        case TaskList(req, state, limit):
            return [req, int(state), limit]
        case TaskListReply(req, records, more):
            return [req, [_task_record(r) for r in records], more]
        case TaskCancelReply(task_id, req, ok, state, error):
            return [task_id, req, ok, int(state), error]
        case BidRequest(task_id, attempt, round_, cpus, memory, gpus, labels, expected):
            return [task_id, attempt, round_, float(cpus), int(memory), int(gpus), dict(labels),
                    float(expected)]  # fmt: skip
        case Bid(task_id, attempt, round_, ok, headroom, load, queued, reason):
            return [task_id, attempt, round_, ok, float(headroom), float(load), queued, reason]
        case Award(record, round_):
            return [_task_record(record), round_]
        case AwardAck(task_id, attempt, ok, started, reason):
            return [task_id, attempt, ok, float(started), reason]
        case Release(task_id, attempt, round_):
            return [task_id, attempt, round_]
        case TaskReport(task_id, attempt, state, exit_code, reason, started, finished, out, err):
            return [task_id, attempt, int(state), int(exit_code), reason, float(started),
                    float(finished), out, err]  # fmt: skip
        case ReportAck(task_id, attempt, keep):
            return [task_id, attempt, keep]
    raise TypeError(f"not a message body: {body!r}")


def record_size(r: TaskRecord) -> int:
    """Bytes `r` takes inside an encoded message (to fill a reply without overflowing it)."""
    return len(msgpack.packb(_task_record(r), use_bin_type=True))


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


def _str(v: Any, what: str, most: int = MAX_ID_LEN) -> str:
    if not isinstance(v, str) or len(v) > most:
        raise _fail(what, v)
    return v


def _id(v: Any, what: str, most: int = MAX_ID_LEN) -> str:
    s = _str(v, what, most)
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


def _status(v: Any, what: str) -> Status:
    return Status(_int(v, what, 0, max(Status)))


def _decode_member(v: Any) -> MemberUpdate:
    node, addr, inc, status, by = _list(v, "member", 5)
    return MemberUpdate(_id(node, "member.node"), _id(addr, "member.addr"),
                        _int(inc, "member.incarnation"), _status(status, "member.status"),
                        _str(by, "member.by"))  # fmt: skip


def _decode_digest(v: Any) -> Digest:
    node, inc, status, version = _list(v, "digest", 4)
    return Digest(_id(node, "digest.node"), _int(inc, "digest.incarnation"),
                  _status(status, "digest.status"), _int(version, "digest.version"))  # fmt: skip


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
        cpus=_num(f[2], "resource.cpus", 0.0, MAX_NODE_CPUS),
        memory=_int(f[3], "resource.memory"),
        gpus=_int(f[4], "resource.gpus"),
        labels=_decode_labels(f[5]),
        alloc_cpus=_num(f[6], "resource.alloc_cpus", 0.0, MAX_NODE_CPUS),
        alloc_memory=_int(f[7], "resource.alloc_memory"),
        alloc_gpus=_int(f[8], "resource.alloc_gpus"),
        load=_int(f[9], "resource.load", 0, MAX_LOAD_STEPS) / LOAD_STEPS,
        mem_load=_int(f[10], "resource.mem_load", 0, MAX_LOAD_STEPS) / LOAD_STEPS,
        forecast=tuple(_int(x, "resource.forecast[]", -MAX_LOAD_STEPS, MAX_LOAD_STEPS)
                       / LOAD_STEPS for x in forecast),  # fmt: skip
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


def _ids(v: Any, what: str) -> tuple[str, ...]:
    return tuple(_id(x, what) for x in _list(v, what))


def _sync(b: list) -> Sync:
    digest, join = _list(b, "sync", 2)
    return Sync(tuple(_decode_digest(d) for d in _list(digest, "sync.digest")),
                _bool(join, "sync.join"))  # fmt: skip


def _sync_reply(b: list) -> SyncReply:
    members, resources, want_members, want_resources = _list(b, "sync_reply", 4)
    return SyncReply(_decode_members(members), _decode_resources(resources),
                     _ids(want_members, "sync_reply.want_members[]"),
                     _ids(want_resources, "sync_reply.want_resources[]"))  # fmt: skip


def _sync_push(b: list) -> SyncPush:
    members, resources = _list(b, "sync_push", 2)
    return SyncPush(_decode_members(members), _decode_resources(resources))


def _gossip_only(b: list) -> GossipOnly:
    (g,) = _list(b, "gossip", 1)
    return GossipOnly(_decode_gossip(g))


def _task_state(v: Any, what: str) -> TaskState:
    return TaskState(_int(v, what, 0, max(TaskState)))


def _time(v: Any, what: str) -> float:
    return _num(v, what, 0.0, MAX_TIME)


def _duration(v: Any, what: str) -> float:
    return _num(v, what, 0.0, MAX_DURATION)


def _reason(v: Any, what: str) -> str:
    return _str(v, what, MAX_REASON_LEN)


def _tail(v: Any, what: str) -> str:
    return _str(v, what, MAX_OUTPUT_TAIL)


def _exit_code(v: Any, what: str) -> int:
    return _int(v, what, MIN_EXIT_CODE, MAX_EXIT_CODE)


def _decode_argv(v: Any) -> tuple[str, ...]:
    argv = _list(v, "task.argv", most=MAX_ARGV)
    if not argv:
        raise WireError("malformed", "task.argv: empty")
    _id(argv[0], "task.argv[0]", MAX_ARG_LEN)
    return tuple(_str(a, "task.argv[]", MAX_ARG_LEN) for a in argv)


def _decode_env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_ENV:
        raise _fail("task.env", v)
    return {_id(k, "task.env key"): _str(x, "task.env value", MAX_ENV_VALUE_LEN)
            for k, x in v.items()}  # fmt: skip


def _decode_task_spec(v: Any) -> TaskSpec:
    f = _list(v, "task.spec", 11)
    return TaskSpec(
        argv=_decode_argv(f[0]),
        cpus=_num(f[1], "task.cpus", 0.0, MAX_TASK_CPUS),
        memory=_int(f[2], "task.memory"),
        gpus=_int(f[3], "task.gpus"),
        labels=_decode_labels(f[4]),
        env=_decode_env(f[5]),
        cwd=_str(f[6], "task.cwd", MAX_CWD_LEN),
        timeout=_duration(f[7], "task.timeout"),
        deadline=_duration(f[8], "task.deadline"),
        expected=_duration(f[9], "task.expected"),
        submitter=_str(f[10], "task.submitter"),
    )


def _decode_task_record(v: Any) -> TaskRecord:
    f = _list(v, "task.record", 18)
    replicas = _list(f[5], "task.replicas", most=MAX_REPLICAS)
    return TaskRecord(
        id=_id(f[0], "task.id"),
        spec=_decode_task_spec(f[1]),
        state=_task_state(f[2], "task.state"),
        version=_int(f[3], "task.version"),
        writer=_str(f[4], "task.writer"),
        replicas=tuple(_id(n, "task.replicas[]") for n in replicas),
        attempt=_int(f[6], "task.attempt"),
        node=_str(f[7], "task.node"),
        node_addr=_str(f[8], "task.node_addr"),
        exit_code=_exit_code(f[9], "task.exit_code"),
        reason=_reason(f[10], "task.reason"),
        submitted=_time(f[11], "task.submitted"),
        placed=_time(f[12], "task.placed"),
        started=_time(f[13], "task.started"),
        finished=_time(f[14], "task.finished"),
        stdout=_tail(f[15], "task.stdout"),
        stderr=_tail(f[16], "task.stderr"),
        node_generation=_int(f[17], "task.node_generation"),
    )


def _task_put(b: list) -> TaskPut:
    (record,) = _list(b, "task_put", 1)
    return TaskPut(_decode_task_record(record))


def _task_put_ack(b: list) -> TaskPutAck:
    task_id, version, state, ok, error = _list(b, "task_put_ack", 5)
    return TaskPutAck(_id(task_id, "task_put_ack.task_id"), _int(version, "task_put_ack.version"),
                      _task_state(state, "task_put_ack.state"), _bool(ok, "task_put_ack.ok"),
                      _reason(error, "task_put_ack.error"))  # fmt: skip


def _task_get(b: list) -> TaskGet:
    task_id, req = _list(b, "task_get", 2)
    return TaskGet(_id(task_id, "task_get.task_id"), _int(req, "task_get.req"))


def _task_get_reply(b: list) -> TaskGetReply:
    task_id, req, record = _list(b, "task_get_reply", 3)
    return TaskGetReply(_id(task_id, "task_get_reply.task_id"), _int(req, "task_get_reply.req"),
                        None if record is None else _decode_task_record(record))  # fmt: skip


def _task_list(b: list) -> TaskList:
    req, state, limit = _list(b, "task_list", 3)
    return TaskList(_int(req, "task_list.req"), _int(state, "task_list.state", -1, max(TaskState)),
                    _int(limit, "task_list.limit", 1, MAX_LIST_RECORDS))  # fmt: skip


def _task_list_reply(b: list) -> TaskListReply:
    req, records, more = _list(b, "task_list_reply", 3)
    records = _list(records, "task_list_reply.records", most=MAX_LIST_RECORDS)
    return TaskListReply(_int(req, "task_list_reply.req"),
                         tuple(_decode_task_record(r) for r in records),
                         _int(more, "task_list_reply.more"))  # fmt: skip


def _task_cancel(b: list) -> TaskCancel:
    task_id, req = _list(b, "task_cancel", 2)
    return TaskCancel(_id(task_id, "task_cancel.task_id"), _int(req, "task_cancel.req"))


def _task_cancel_reply(b: list) -> TaskCancelReply:
    task_id, req, ok, state, error = _list(b, "task_cancel_reply", 5)
    return TaskCancelReply(
        _id(task_id, "task_cancel_reply.task_id"), _int(req, "task_cancel_reply.req"),
        _bool(ok, "task_cancel_reply.ok"), _task_state(state, "task_cancel_reply.state"),
        _reason(error, "task_cancel_reply.error"),
    )  # fmt: skip


def _bid_request(b: list) -> BidRequest:
    task_id, attempt, round_, cpus, memory, gpus, labels, expected = _list(b, "bid_request", 8)
    return BidRequest(
        task_id=_id(task_id, "bid_request.task_id"),
        attempt=_int(attempt, "bid_request.attempt"),
        round=_int(round_, "bid_request.round"),
        cpus=_num(cpus, "bid_request.cpus", 0.0, MAX_TASK_CPUS),
        memory=_int(memory, "bid_request.memory"),
        gpus=_int(gpus, "bid_request.gpus"),
        labels=_decode_labels(labels),
        expected=_duration(expected, "bid_request.expected"),
    )


def _bid(b: list) -> Bid:
    task_id, attempt, round_, ok, headroom, load, queued, reason = _list(b, "bid", 8)
    return Bid(
        task_id=_id(task_id, "bid.task_id"),
        attempt=_int(attempt, "bid.attempt"),
        round=_int(round_, "bid.round"),
        ok=_bool(ok, "bid.ok"),
        headroom=_num(headroom, "bid.headroom", -MAX_HEADROOM, MAX_HEADROOM),
        load=_num(load, "bid.load", 0.0, MAX_BID_LOAD),
        queued=_int(queued, "bid.queued"),
        reason=_reason(reason, "bid.reason"),
    )


def _award(b: list) -> Award:
    record, round_ = _list(b, "award", 2)
    return Award(_decode_task_record(record), _int(round_, "award.round"))


def _award_ack(b: list) -> AwardAck:
    task_id, attempt, ok, started, reason = _list(b, "award_ack", 5)
    return AwardAck(_id(task_id, "award_ack.task_id"), _int(attempt, "award_ack.attempt"),
                    _bool(ok, "award_ack.ok"), _time(started, "award_ack.started"),
                    _reason(reason, "award_ack.reason"))  # fmt: skip


def _release(b: list) -> Release:
    task_id, attempt, round_ = _list(b, "release", 3)
    return Release(_id(task_id, "release.task_id"), _int(attempt, "release.attempt"),
                   _int(round_, "release.round"))  # fmt: skip


def _task_report(b: list) -> TaskReport:
    task_id, attempt, state, exit_code, reason, started, finished, out, err = _list(
        b, "task_report", 9
    )
    return TaskReport(
        task_id=_id(task_id, "task_report.task_id"),
        attempt=_int(attempt, "task_report.attempt"),
        state=_task_state(state, "task_report.state"),
        exit_code=_exit_code(exit_code, "task_report.exit_code"),
        reason=_reason(reason, "task_report.reason"),
        started=_time(started, "task_report.started"),
        finished=_time(finished, "task_report.finished"),
        stdout=_tail(out, "task_report.stdout"),
        stderr=_tail(err, "task_report.stderr"),
    )


def _report_ack(b: list) -> ReportAck:
    task_id, attempt, keep = _list(b, "report_ack", 3)
    return ReportAck(_id(task_id, "report_ack.task_id"), _int(attempt, "report_ack.attempt"),
                     _bool(keep, "report_ack.keep"))  # fmt: skip


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
    Kind.SYNC_PUSH: _sync_push,
    Kind.GOSSIP: _gossip_only,
    Kind.QUERY: _query,
    Kind.QUERY_REPLY: _query_reply,
    Kind.TASK_PUT: _task_put,
    Kind.TASK_PUT_ACK: _task_put_ack,
    Kind.TASK_GET: _task_get,
    Kind.TASK_GET_REPLY: _task_get_reply,
    Kind.TASK_LIST: _task_list,
    Kind.TASK_LIST_REPLY: _task_list_reply,
    Kind.TASK_CANCEL: _task_cancel,
    Kind.TASK_CANCEL_REPLY: _task_cancel_reply,
    Kind.BID_REQUEST: _bid_request,
    Kind.BID: _bid,
    Kind.AWARD: _award,
    Kind.AWARD_ACK: _award_ack,
    Kind.RELEASE: _release,
    Kind.TASK_REPORT: _task_report,
    Kind.REPORT_ACK: _report_ack,
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
    if type(kind) is not int or kind not in Kind._value2member_map_ or Kind(kind) not in _DECODERS:
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
