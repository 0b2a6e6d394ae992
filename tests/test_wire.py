"""The wire format: round trips, limits, and a decoder that only ever raises WireError."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.messages import (
    MAX_BID_LOAD,
    MAX_HEADROOM,
    MAX_LIST_RECORDS,
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Release,
    ReportAck,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskPut,
    TaskPutAck,
    TaskReport,
)
from agent.tasks import (
    MAX_ARG_LEN,
    MAX_ARGV,
    MAX_CWD_LEN,
    MAX_DURATION,
    MAX_ENV,
    MAX_ENV_VALUE_LEN,
    MAX_EXIT_CODE,
    MAX_OUTPUT_TAIL,
    MAX_REASON_LEN,
    MAX_REPLICAS,
    MAX_TASK_CPUS,
    MAX_TIME,
    MIN_EXIT_CODE,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from gossip import wire
from gossip.fields import MAX_ID_LEN, MAX_INT
from gossip.kinds import kinds
from gossip.messages import (
    PROTOCOL_VERSION,
    Ack,
    Digest,
    Gossip,
    GossipOnly,
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
    SyncPush,
    SyncReply,
)

REC = ResourceRecord(
    node="n1", version=7, cpus=4.0, memory=8 << 30, gpus=1, labels={"zone": "eu"},
    alloc_cpus=1.5, alloc_memory=1 << 30, alloc_gpus=0, load=0.25, mem_load=0.5,
    forecast=(0.2, 0.3, 0.4),
)  # fmt: skip
UPD = MemberUpdate("n2", "tcp://10.0.0.2:7946", 3, Status.SUSPECT, by="n1")
G = Gossip((UPD,), (REC,))

SPEC = TaskSpec(
    argv=("python", "-c", "print('hi')"), cpus=2.5, memory=1 << 30, gpus=1,
    labels={"zone": "eu"}, env={"SEED": "7", "EMPTY": ""}, cwd="/tmp", timeout=30.0,
    deadline=600.0, expected=12.5,
)  # fmt: skip
TASK = TaskRecord(
    id="t-1", spec=SPEC, state=TaskState.SUCCEEDED, version=5, writer="n2",
    replicas=("n2", "n3", "n4"), attempt=2, node="n3", node_addr="tcp://10.0.0.3:7946",
    exit_code=-9, reason="killed", submitted=1.7e9, placed=1.7e9 + 1, started=1.7e9 + 2,
    finished=1.7e9 + 3, stdout="out\n", stderr="err\n",
)  # fmt: skip
MINIMAL_TASK = TaskRecord("t-2", TaskSpec(("true",)))

TASK_BODIES = [
    TaskPut(TASK),
    TaskPut(MINIMAL_TASK),
    TaskPut(MINIMAL_TASK, submission=True),
    TaskPutAck("t-1", 5, TaskState.RUNNING, ok=False, error="id taken"),
    TaskPutAck("t-1", 1, TaskState.PENDING, all_replicas=True),
    TaskPutAck("t-1", 2, TaskState.PLACED, all_replicas=True, submitted=1764806400.25),
    TaskGet("t-1", 3),
    TaskGetReply("t-1", 3, TASK),
    TaskGetReply("t-1", 3, None),
    TaskList(4, state=int(TaskState.FAILED), limit=50),
    TaskList(4),
    TaskListReply(4, (TASK, MINIMAL_TASK)),
    TaskListReply(4, (MINIMAL_TASK,), more=12),
    TaskListReply(4),
    TaskCancel("t-1", 5),
    TaskCancelReply("t-1", 5, True, TaskState.CANCELLED, ""),
    TaskCancelReply("t-1", 5, False, error="not the owner"),
    BidRequest("t-1", 2, 1, 2.5, 1 << 30, 0, {"zone": "eu"}, 60.0),
    Bid("t-1", 2, 1, True, headroom=-1.5, load=0.75, queued=3),
    Bid("t-1", 2, 1, False, reason="no gpu"),
    Award(TASK, 1),
    AwardAck("t-1", 2, True, started=1.7e9),
    AwardAck("t-1", 2, False, reason="busy"),
    Release("t-1", 2, 1),
    TaskReport("t-1", 2, TaskState.FAILED, 3, "exit code 3", 1.7e9, 1.7e9 + 4, "o", "e"),
    TaskReport("t-1", 2, TaskState.RUNNING),
    ReportAck("t-1", 2, keep=False),
]

BODIES = [
    Ping("n2", G),
    Ack("n2", G),
    PingReq("n3", "tcp://10.0.0.3:7946", G),
    Nack("n3"),
    Sync((Digest("n2", 3, Status.SUSPECT, 7), Digest("n1", 0, Status.ALIVE, 0)), join=True),
    Sync(()),
    SyncReply((UPD,), (REC,), ("n3",), ("n3", "n4")),
    SyncReply((), ()),
    SyncPush((UPD,), (REC,)),
    GossipOnly(G),
    Query("members", {"x": 1}),
    QueryReply(True, [{"node": "n1"}], ""),
    *TASK_BODIES,
]


def test_every_kind_has_a_round_trip_example():
    assert {Message("n", "a", 0, b).kind for b in BODIES} == set(kinds())


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_round_trip(body):
    msg = Message("n1", "tcp://10.0.0.1:7946", 42, body)
    assert wire.decode(wire.encode(msg)) == msg


def test_decoded_task_fields_have_their_declared_types():
    rec = wire.decode(wire.encode(Message("n1", "a", 0, TaskPut(TASK)))).body.record
    assert type(rec.state) is TaskState and type(rec.spec.argv) is tuple
    assert type(rec.replicas) is tuple and type(rec.spec.cpus) is float
    ack = wire.decode(wire.encode(Message("n1", "a", 0, TaskPutAck("t", 1, TaskState.PLACED))))
    assert type(ack.body.state) is TaskState


def test_task_limits_are_inclusive():
    big = TaskSpec(
        argv=("x" * MAX_ARG_LEN,) + ("",) * (MAX_ARGV - 1),
        cpus=MAX_TASK_CPUS,
        env={f"K{i}": "" for i in range(MAX_ENV - 1)} | {"BIG": "v" * MAX_ENV_VALUE_LEN},
        cwd="/" * MAX_CWD_LEN,
        timeout=MAX_DURATION,
        deadline=MAX_DURATION,
        expected=0,
    )
    rec = TaskRecord(
        id="t" * MAX_ID_LEN, spec=big, state=TaskState.REJECTED, version=MAX_INT,
        replicas=tuple(f"n{i}" for i in range(MAX_REPLICAS)), attempt=MAX_INT,
        exit_code=MIN_EXIT_CODE, reason="r" * MAX_REASON_LEN, finished=MAX_TIME,
        stdout="o" * MAX_OUTPUT_TAIL, stderr="é" * MAX_OUTPUT_TAIL,
    )  # fmt: skip
    for body in [
        TaskPut(rec),
        TaskList(0, state=-1, limit=MAX_LIST_RECORDS),
        TaskList(0, state=int(TaskState.REJECTED), limit=1),
        TaskListReply(0, (MINIMAL_TASK,) * MAX_LIST_RECORDS),
        TaskReport("t", 0, TaskState.PENDING, exit_code=MAX_EXIT_CODE),
        Bid("t", 0, 0, True, headroom=-MAX_HEADROOM, load=MAX_BID_LOAD),
    ]:
        msg = Message("n1", "a", 0, body)
        assert wire.decode(wire.encode(msg)) == msg


def _envelope(**over):
    fields = dict(v=PROTOCOL_VERSION, k=7, s="n1", a="tcp://x:1", q=0, b=[[[], []]])
    fields.update(over)
    return msgpack.packb([fields["v"], fields["k"], fields["s"], fields["a"], fields["q"],
                          fields["b"]])  # fmt: skip


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (msgpack.packb({"a": 1}), "malformed"),
        (_envelope(v=99), "wrong_version"),
        (_envelope(k=250), "unknown_kind"),
        (_envelope(k="ping"), "unknown_kind"),
        (_envelope(s=""), "malformed"),
        (_envelope(s=5), "malformed"),
        (_envelope(q=-1), "malformed"),
        (_envelope(b=[[[["n", "a", 0, 9, ""]], []]]), "malformed"),  # status out of range
        (_envelope(b=[[[["n", "a", -1, 0, ""]], []]]), "malformed"),  # negative incarnation
        (_envelope(b=[[[], [["n", 1, float("nan")] + [0] * 9]]]), "malformed"),
        (_envelope(b=[[[], []], "extra"]), "malformed"),
        (_envelope(b="notalist"), "malformed"),
        (b"\x91" * 5000 + b"\x90", "undecodable"),  # nesting deeper than the unpacker allows
        (b"\x00" * (wire.MAX_MESSAGE_BYTES + 1), "oversized"),
        (msgpack.packb([1, 7, "n1", "a", 0, [[[], []]]]) + b"\x00", "undecodable"),  # trailing
    ],
)
def test_bad_input_is_a_wire_error_with_a_reason(data, reason):
    with pytest.raises(wire.WireError) as e:
        wire.decode(data)
    assert e.value.reason == reason


_DROP = object()  # remove the element instead of replacing it
_APPEND = object()  # as a value: append an extra element to the array at the path


def _raw(body):
    """The envelope of `body` as plain msgpack data, ready to be tampered with."""
    return msgpack.unpackb(wire.encode(Message("n1", "a", 0, body)))


def _mutated(body, path, value):
    """Encode `body`, then set (or drop, or append to) the element at `path` in its body array
    (`path` () is the body array itself)."""
    raw = _raw(body)
    *walk, last = (5, *path)
    parent = raw
    for i in walk:
        parent = parent[i]
    if value is _DROP:
        del parent[last]
    elif value is _APPEND:
        parent[last].append(0)
    else:
        parent[last] = value
    return msgpack.packb(raw)


# indices in the flat task arrays
S_ARGV, S_CPUS, S_MEM, S_GPUS, S_LABELS, S_ENV, S_CWD, S_TIMEOUT, S_DEADLINE, S_EXPECTED = range(10)
R_ID, R_SPEC, R_STATE, R_VERSION, R_WRITER, R_REPLICAS, R_ATTEMPT, R_NODE, R_ADDR = range(9)
R_EXIT, R_REASON, R_SUBMITTED, R_PLACED, R_STARTED, R_FINISHED, R_STDOUT, R_STDERR = range(9, 17)
PUT = TaskPut(TASK)
REC_ = (0,)  # path of the record inside TaskPut
SPEC_ = (0, R_SPEC)  # path of the spec inside TaskPut
BIG_TAIL = "x" * (MAX_OUTPUT_TAIL + 1)
RAW_MINIMAL_TASK = _raw(TaskPut(MINIMAL_TASK))[5][0]

MALFORMED_TASK_BODIES = [
    # TaskPut and the record / spec arrays it carries
    (PUT, (), []),  # body arity
    (PUT, (), _APPEND),
    (PUT, (0,), None),
    (PUT, (0,), "record"),
    (PUT, (1,), 1),  # submission: a bool, not a number
    (PUT, (1,), _DROP),
    (PUT, REC_, _APPEND),  # record arity
    (PUT, (0, R_STDERR), _DROP),
    (PUT, REC_ + (R_ID,), ""),
    (PUT, REC_ + (R_ID,), 7),
    (PUT, REC_ + (R_ID,), "t" * (MAX_ID_LEN + 1)),
    (PUT, REC_ + (R_STATE,), 7),  # not a TaskState
    (PUT, REC_ + (R_STATE,), -1),
    (PUT, REC_ + (R_STATE,), True),
    (PUT, REC_ + (R_STATE,), "running"),
    (PUT, REC_ + (R_VERSION,), -1),
    (PUT, REC_ + (R_VERSION,), 1.0),
    (PUT, REC_ + (R_WRITER,), None),
    (PUT, REC_ + (R_REPLICAS,), "n2"),
    (PUT, REC_ + (R_REPLICAS,), [""]),
    (PUT, REC_ + (R_REPLICAS,), [3]),
    (PUT, REC_ + (R_REPLICAS,), [f"n{i}" for i in range(MAX_REPLICAS + 1)]),
    (PUT, REC_ + (R_ATTEMPT,), -1),
    (PUT, REC_ + (R_NODE,), 1),
    (PUT, REC_ + (R_ADDR,), "a" * (MAX_ID_LEN + 1)),
    (PUT, REC_ + (R_EXIT,), 2**31),
    (PUT, REC_ + (R_EXIT,), -(2**31) - 1),
    (PUT, REC_ + (R_EXIT,), 1.0),
    (PUT, REC_ + (R_REASON,), "r" * (MAX_REASON_LEN + 1)),
    (PUT, REC_ + (R_SUBMITTED,), -1.0),
    (PUT, REC_ + (R_PLACED,), float("inf")),
    (PUT, REC_ + (R_STARTED,), float("nan")),
    (PUT, REC_ + (R_FINISHED,), MAX_TIME * 2),
    (PUT, REC_ + (R_FINISHED,), "now"),
    (PUT, REC_ + (R_STDOUT,), BIG_TAIL),
    (PUT, REC_ + (R_STDERR,), BIG_TAIL),
    (PUT, REC_ + (R_STDOUT,), b"bytes"),
    (PUT, REC_ + (R_SPEC,), None),
    (PUT, SPEC_, _APPEND),  # spec arity
    (PUT, SPEC_ + (S_EXPECTED,), _DROP),
    (PUT, SPEC_ + (S_ARGV,), []),  # empty argv
    (PUT, SPEC_ + (S_ARGV,), [""]),  # empty program
    (PUT, SPEC_ + (S_ARGV,), "python"),
    (PUT, SPEC_ + (S_ARGV,), ["python", 3]),
    (PUT, SPEC_ + (S_ARGV,), ["python", "x" * (MAX_ARG_LEN + 1)]),
    (PUT, SPEC_ + (S_ARGV,), ["x"] * (MAX_ARGV + 1)),
    (PUT, SPEC_ + (S_CPUS,), -0.5),
    (PUT, SPEC_ + (S_CPUS,), MAX_TASK_CPUS * 2),
    (PUT, SPEC_ + (S_CPUS,), float("nan")),
    (PUT, SPEC_ + (S_CPUS,), "2"),
    (PUT, SPEC_ + (S_MEM,), -1),
    (PUT, SPEC_ + (S_MEM,), 1.5),
    (PUT, SPEC_ + (S_GPUS,), -1),
    (PUT, SPEC_ + (S_GPUS,), False),
    (PUT, SPEC_ + (S_LABELS,), ["zone"]),
    (PUT, SPEC_ + (S_LABELS,), {"": "x"}),
    (PUT, SPEC_ + (S_LABELS,), {"zone": 1}),
    (PUT, SPEC_ + (S_ENV,), None),
    (PUT, SPEC_ + (S_ENV,), {"": "x"}),
    (PUT, SPEC_ + (S_ENV,), {"K": 1}),
    (PUT, SPEC_ + (S_ENV,), {"k" * (MAX_ID_LEN + 1): "x"}),
    (PUT, SPEC_ + (S_ENV,), {"K": "v" * (MAX_ENV_VALUE_LEN + 1)}),
    (PUT, SPEC_ + (S_ENV,), {f"K{i}": "" for i in range(MAX_ENV + 1)}),
    (PUT, SPEC_ + (S_CWD,), "/" * (MAX_CWD_LEN + 1)),
    (PUT, SPEC_ + (S_CWD,), None),
    (PUT, SPEC_ + (S_TIMEOUT,), -1.0),
    (PUT, SPEC_ + (S_TIMEOUT,), float("inf")),
    (PUT, SPEC_ + (S_DEADLINE,), MAX_DURATION * 2),
    (PUT, SPEC_ + (S_EXPECTED,), None),
    # TaskPutAck [task_id, version, state, ok, error, all_replicas, submitted]
    (TaskPutAck("t", 1, TaskState.PENDING), (0,), ""),
    (TaskPutAck("t", 1, TaskState.PENDING), (1,), -1),
    (TaskPutAck("t", 1, TaskState.PENDING), (2,), 9),
    (TaskPutAck("t", 1, TaskState.PENDING), (3,), 1),
    (TaskPutAck("t", 1, TaskState.PENDING), (4,), "e" * (MAX_REASON_LEN + 1)),
    (TaskPutAck("t", 1, TaskState.PENDING), (4,), _DROP),
    (TaskPutAck("t", 1, TaskState.PENDING), (5,), "yes"),
    (TaskPutAck("t", 1, TaskState.PENDING), (5,), _DROP),
    (TaskPutAck("t", 1, TaskState.PENDING), (6,), -1.0),
    (TaskPutAck("t", 1, TaskState.PENDING), (6,), float("nan")),
    (TaskPutAck("t", 1, TaskState.PENDING), (6,), "x"),
    # TaskGet [task_id, req]
    (TaskGet("t", 1), (0,), None),
    (TaskGet("t", 1), (1,), -1),
    (TaskGet("t", 1), (1,), _DROP),
    # TaskGetReply [task_id, req, record | nil]
    (TaskGetReply("t", 1, TASK), (2,), "none"),
    (TaskGetReply("t", 1, TASK), (2,), []),
    (TaskGetReply("t", 1, TASK), (2, R_STATE), 8),
    (TaskGetReply("t", 1, None), (1,), "1"),
    (TaskGetReply("t", 1, None), (2,), _DROP),
    # TaskList [req, state, limit]
    (TaskList(1), (1,), -2),
    (TaskList(1), (1,), 7),
    (TaskList(1), (2,), 0),
    (TaskList(1), (2,), MAX_LIST_RECORDS + 1),
    (TaskList(1), (0,), 1.0),
    (TaskList(1), (2,), _DROP),
    # TaskListReply [req, records, more]
    (TaskListReply(1, (TASK,)), (1,), None),
    (TaskListReply(1, (TASK,), 3), (2,), -1),
    (TaskListReply(1, (TASK,), 3), (2,), 1.0),
    (TaskListReply(1, (TASK,), 3), (2,), _DROP),
    (TaskListReply(1, (TASK,)), (1,), [None]),
    (TaskListReply(1, (TASK,)), (1, 0, R_SPEC, S_ARGV), []),
    (TaskListReply(1, (TASK,)), (1,), [RAW_MINIMAL_TASK] * (MAX_LIST_RECORDS + 1)),
    (TaskListReply(1), (0,), -1),
    # TaskCancel [task_id, req]
    (TaskCancel("t", 1), (0,), ""),
    (TaskCancel("t", 1), (), _APPEND),
    # TaskCancelReply [task_id, req, ok, state, error]
    (TaskCancelReply("t", 1, True), (2,), 0),
    (TaskCancelReply("t", 1, True), (3,), 7),
    (TaskCancelReply("t", 1, True), (4,), None),
    # BidRequest [task_id, attempt, round, cpus, memory, gpus, labels, expected]
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (1,), -1),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (2,), -1),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (3,), -1.0),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (4,), -1),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (5,), 0.5),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (6,), None),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (7,), float("nan")),
    (BidRequest("t", 0, 0, 1.0, 0, 0, {}, 1.0), (7,), _DROP),
    # Bid [task_id, attempt, round, ok, headroom, load, queued, reason]
    (Bid("t", 0, 0, True), (3,), None),
    (Bid("t", 0, 0, True), (4,), -MAX_HEADROOM * 2),
    (Bid("t", 0, 0, True), (4,), float("inf")),
    (Bid("t", 0, 0, True), (5,), -0.1),
    (Bid("t", 0, 0, True), (5,), MAX_BID_LOAD * 2),
    (Bid("t", 0, 0, True), (6,), -1),
    (Bid("t", 0, 0, True), (7,), "r" * (MAX_REASON_LEN + 1)),
    (Bid("t", 0, 0, True), (), _APPEND),
    # Award [record, round]
    (Award(TASK, 1), (1,), -1),
    (Award(TASK, 1), (0, R_STDOUT), BIG_TAIL),
    (Award(TASK, 1), (1,), _DROP),
    # AwardAck [task_id, attempt, ok, started, reason]
    (AwardAck("t", 0, True), (2,), "yes"),
    (AwardAck("t", 0, True), (3,), -1.0),
    (AwardAck("t", 0, True), (4,), 5),
    # Release [task_id, attempt, round]
    (Release("t", 0, 0), (0,), ""),
    (Release("t", 0, 0), (2,), -1),
    (Release("t", 0, 0), (2,), _DROP),
    # TaskReport [task_id, attempt, state, exit_code, reason, started, finished, stdout, stderr]
    (TaskReport("t", 0, TaskState.RUNNING), (2,), 7),
    (TaskReport("t", 0, TaskState.RUNNING), (2,), None),
    (TaskReport("t", 0, TaskState.RUNNING), (3,), 2**31),
    (TaskReport("t", 0, TaskState.RUNNING), (5,), float("nan")),
    (TaskReport("t", 0, TaskState.RUNNING), (6,), -1.0),
    (TaskReport("t", 0, TaskState.RUNNING), (7,), BIG_TAIL),
    (TaskReport("t", 0, TaskState.RUNNING), (8,), BIG_TAIL),
    (TaskReport("t", 0, TaskState.RUNNING), (8,), _DROP),
    # ReportAck [task_id, attempt, keep]
    (ReportAck("t", 0, True), (2,), 1),
    (ReportAck("t", 0, True), (1,), -1),
    (ReportAck("t", 0, True), (), _APPEND),
]


def _case_id(case):
    body, path, value = case
    shown = "drop" if value is _DROP else "append" if value is _APPEND else repr(value)[:24]
    return f"{type(body).__name__}{list(path)}={shown}"


@pytest.mark.parametrize("case", MALFORMED_TASK_BODIES, ids=map(_case_id, MALFORMED_TASK_BODIES))
def test_malformed_task_bodies_are_rejected(case):
    with pytest.raises(wire.WireError) as e:
        wire.decode(_mutated(*case))
    assert e.value.reason == "malformed"


SYNC = Sync((Digest("n2", 3, Status.SUSPECT, 7),))
REPLY = SyncReply((UPD,), (REC,), ("n3",), ("n4",))
MALFORMED_SYNC_BODIES = [
    # Sync [digest[], join]; a digest entry is [node, incarnation, status, version]
    (SYNC, (), _APPEND),
    (SYNC, (1,), _DROP),
    (SYNC, (0,), "digest"),
    (SYNC, (1,), 1),  # join must be a bool
    (SYNC, (0, 0), _APPEND),  # entry arity
    (SYNC, (0, 0, 3), _DROP),
    (SYNC, (0, 0, 0), ""),
    (SYNC, (0, 0, 0), 7),
    (SYNC, (0, 0, 0), "n" * (MAX_ID_LEN + 1)),
    (SYNC, (0, 0, 1), -1),
    (SYNC, (0, 0, 1), 2**63),
    (SYNC, (0, 0, 1), 1.0),
    (SYNC, (0, 0, 2), 4),  # not a Status
    (SYNC, (0, 0, 2), -1),
    (SYNC, (0, 0, 2), None),
    (SYNC, (0, 0, 3), -1),
    (SYNC, (0, 0, 3), 2**63),
    (SYNC, (0, 0, 3), "7"),
    # SyncReply [members[], resources[], want_members[], want_resources[]]
    (REPLY, (), _APPEND),
    (REPLY, (3,), _DROP),
    (REPLY, (2,), "n3"),
    (REPLY, (2,), [""]),
    (REPLY, (3,), [7]),
    (REPLY, (3,), ["n" * (MAX_ID_LEN + 1)]),
    (REPLY, (0, 0, 3), 4),  # a member's status
    # SyncPush [members[], resources[]]
    (SyncPush((UPD,), (REC,)), (), _APPEND),
    (SyncPush((UPD,), (REC,)), (1, 0, 1), -1),  # a record's version
]


@pytest.mark.parametrize("case", MALFORMED_SYNC_BODIES, ids=map(_case_id, MALFORMED_SYNC_BODIES))
def test_malformed_push_pull_bodies_are_rejected(case):
    with pytest.raises(wire.WireError) as e:
        wire.decode(_mutated(*case))
    assert e.value.reason == "malformed"


def test_push_pull_limits_are_inclusive():
    top = Digest("n" * MAX_ID_LEN, MAX_INT, Status.LEFT, MAX_INT)
    ids = ("n" * MAX_ID_LEN,) * 1000
    for body in [Sync((top,) * 1000), SyncReply((), (), ids, ids)]:
        msg = Message("n1", "a", 0, body)
        assert wire.decode(wire.encode(msg)) == msg


def test_a_records_whole_cpu_counts_travel_as_integers():
    """A float is 9 bytes in msgpack, a small integer 1: an idle agent's record (2.0 CPUs, 0.0
    allocated) was a quarter bigger for nothing, on every message that gossips it."""
    rec = ResourceRecord("n1", 7, cpus=2.0, alloc_cpus=0.0, memory=1 << 34)
    raw = msgpack.unpackb(wire.encode(Message("n1", "a", 0, GossipOnly(Gossip((), (rec,))))))
    cpus, alloc = raw[5][0][1][0][2], raw[5][0][1][0][6]
    assert (type(cpus), type(alloc)) == (int, int) and (cpus, alloc) == (2, 0)
    for x in (2.0, 0.5, 1e18, 2.0**53 + 2, 1e-300, 0.0, -0.0):
        r = dataclasses.replace(rec, cpus=x, alloc_cpus=x)
        back = wire.decode(wire.encode(Message("n1", "a", 0, GossipOnly(Gossip((), (r,))))))
        (got,) = back.body.gossip.resources
        assert got == r and type(got.cpus) is float and type(got.alloc_cpus) is float, x
    with pytest.raises(wire.WireError):  # out of range stays refused, and encoding never raises
        wire.decode(wire.encode(Message("n1", "a", 0, GossipOnly(Gossip((), (
            dataclasses.replace(rec, cpus=1e300),))))))  # fmt: skip


def test_encode_refuses_oversized_messages():
    many = tuple(MemberUpdate(f"n{i}", "tcp://" + "h" * 200 + ":1", 0, Status.ALIVE)
                 for i in range(20_000))  # fmt: skip
    with pytest.raises(wire.WireError):
        wire.encode(Message("n1", "a", 0, SyncPush(many, ())))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_wire_error(data):
    try:
        wire.decode(data)
    except wire.WireError:
        pass


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(BODIES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_mutated_valid_messages_decode_or_raise_wire_error(body, flips, cut):
    data = bytearray(wire.encode(Message("n1", "tcp://a:1", 1, body)))
    for pos, val in flips:
        data[pos % len(data)] = val
    data = data[: max(1, len(data) - cut % 8)]
    try:
        msg = wire.decode(bytes(data))
    except wire.WireError:
        return
    assert isinstance(msg, Message)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, max(k.number for k in kinds()) + 8), json_like)
def test_well_formed_msgpack_of_any_shape_is_validated(kind, body):
    try:
        wire.decode(msgpack.packb([PROTOCOL_VERSION, kind, "n1", "a", 0, body]))
    except wire.WireError:
        pass


def _paths(x, prefix=()):
    """Every position in a nested msgpack array (the array itself included)."""
    yield prefix
    if isinstance(x, list):
        for i, y in enumerate(x):
            yield from _paths(y, (*prefix, i))


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(BODIES), st.data(), json_like)
def test_valid_bodies_with_one_field_replaced_decode_or_raise_wire_error(body, data, value):
    path = data.draw(st.sampled_from(list(_paths(_raw(body)[5]))))
    try:
        msg = wire.decode(_mutated(body, path, value))
    except wire.WireError as e:
        assert e.reason == "malformed"
        return
    assert isinstance(msg, Message)


_ids = st.text(min_size=1, max_size=12)
_text = st.text(max_size=24)
_ints = st.integers(0, MAX_INT)
_times = st.floats(0, MAX_TIME)
_durations = st.floats(0, MAX_DURATION)
_specs = st.builds(
    TaskSpec,
    argv=st.tuples(_ids) | st.lists(_text, max_size=4).map(lambda a: ("p", *a)),
    cpus=st.floats(0, MAX_TASK_CPUS),
    memory=_ints,
    gpus=_ints,
    labels=st.dictionaries(_ids, _text, max_size=3),
    env=st.dictionaries(_ids, _text, max_size=3),
    cwd=_text,
    timeout=_durations,
    deadline=_durations,
    expected=_durations,
)
_records = st.builds(
    TaskRecord,
    id=_ids,
    spec=_specs,
    state=st.sampled_from(TaskState),
    version=_ints,
    writer=_text,
    replicas=st.lists(_ids, max_size=4).map(tuple),
    attempt=_ints,
    node=_text,
    node_addr=_text,
    exit_code=st.integers(MIN_EXIT_CODE, MAX_EXIT_CODE),
    reason=_text,
    submitted=_times,
    placed=_times,
    started=_times,
    finished=_times,
    stdout=_text,
    stderr=_text,
)


@settings(max_examples=300, deadline=None)
@given(_records, st.sampled_from([
    TaskPut, lambda r: Award(r, 3), lambda r: TaskGetReply(r.id, 1, r),
    lambda r: TaskListReply(1, (r, r)),
]))  # fmt: skip
def test_generated_task_records_round_trip(record, wrap):
    msg = Message("n1", "a", 0, wrap(record))
    assert wire.decode(wire.encode(msg)) == msg
