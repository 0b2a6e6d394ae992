"""The wire bytes of every message kind are pinned: a change to them is a protocol change.

`tests/fixtures/wire_golden.json` holds the encodings of `samples()`. They were first made by the
code at commit e86aec7, before the kind registry, and showed that moving kinds between packages
and registering them changed not one byte. They were regenerated for protocol 4
(push-pull digests, whole CPU counts as integers) and for protocol 5 (a submission goes to the
owner alone: `TaskPut.submission`, `TaskPutAck.all_replicas`) and for protocol 6
(`TaskPutAck.submitted`); a later difference must come with a protocol version of its own, and a
regeneration said in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.messages import (
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
from agent.tasks import TaskRecord, TaskSpec, TaskState
from gossip import wire
from gossip.kinds import kinds
from gossip.messages import (
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

FIXTURE = Path(__file__).parent / "fixtures" / "wire_golden.json"
GOLDEN: dict[str, str] = json.loads(FIXTURE.read_text())["samples"]  # name -> hex


def samples() -> list[tuple[str, Message]]:
    """Each kind with its optional fields set and unset, edge values (int-valued floats, loads
    that quantize, unicode, the largest seq), in three envelopes."""
    rec = ResourceRecord(
        node="n1", version=7, cpus=4.0, memory=8 << 30, gpus=1, labels={"zone": "eu", "é": "ü"},
        alloc_cpus=1.5, alloc_memory=1 << 30, alloc_gpus=0, load=0.25, mem_load=0.5,
        forecast=(0.2, 0.3, 0.4, -0.125, 1.0),
    )
    rec_int = ResourceRecord(node="n9", version=(5 << 20) + 1, cpus=2, memory=0, load=0.1234,
                             mem_load=0.9999, forecast=(0.0005,))
    upd = MemberUpdate("n2", "tcp://10.0.0.2:7946", 3, Status.SUSPECT, by="n1")
    upds = (upd, MemberUpdate("n3", "udp://x:1", 0, Status.ALIVE),
            MemberUpdate("n4", "a", 2**62, Status.DEAD, by="n3"),
            MemberUpdate("n5", "b", 9, Status.LEFT))
    g = Gossip(upds, (rec, rec_int))
    spec = TaskSpec(
        argv=("python", "-c", "print('hi')"), cpus=2.5, memory=1 << 30, gpus=1,
        labels={"zone": "eu"}, env={"SEED": "7", "EMPTY": ""}, cwd="/tmp", timeout=30.0,
        deadline=600.0, expected=12.5, submitter="alice",
    )
    task = TaskRecord(
        id="t-1", spec=spec, state=TaskState.SUCCEEDED, version=5, writer="n2",
        replicas=("n2", "n3", "n4"), attempt=2, node="n3", node_addr="tcp://10.0.0.3:7946",
        exit_code=-9, reason="killed", submitted=1.7e9, placed=1.7e9 + 1, started=1.7e9 + 2,
        finished=1.7e9 + 3, stdout="out\n", stderr="err ✓\n", node_generation=123456789,
    )
    minimal = TaskRecord("t-2", TaskSpec(("true",)))
    int_spec = TaskRecord("t-3", TaskSpec(("x",), cpus=3, timeout=5, deadline=7, expected=1),
                          state=TaskState.RUNNING, submitted=10, placed=11, started=12)
    bodies = [
        ("ping", Ping("n2", g)), ("ping-empty", Ping("n2")),
        ("ack", Ack("n2", g)), ("ack-empty", Ack("n7")),
        ("ping_req", PingReq("n3", "tcp://10.0.0.3:7946", g)),
        ("ping_req-empty", PingReq("n3", "tcp://10.0.0.3:7946")),
        ("nack", Nack("n3")),
        ("sync-join", Sync((Digest("n1", 0, Status.ALIVE, 0),), join=True)),
        ("sync", Sync((Digest("n2", 3, Status.SUSPECT, 7), Digest("n4", 2**62, Status.DEAD,
                                                                   (5 << 20) + 1)))),
        ("sync-empty", Sync(())),
        ("sync_reply", SyncReply(upds, (rec, rec_int), ("n6",), ("n6", "n7"))),
        ("sync_reply-empty", SyncReply((), ())),
        ("sync_push", SyncPush(upds, (rec,))), ("sync_push-empty", SyncPush((), ())),
        ("gossip", GossipOnly(g)), ("gossip-members", GossipOnly(Gossip((upd,)))),
        ("query", Query("members", {"x": 1, "nested": {"a": [1, 2.5, None, True]}})),
        ("query-noargs", Query("stats")),
        ("query_reply", QueryReply(True, [{"node": "n1", "load": 0.5}], "")),
        ("query_reply-error", QueryReply(False, None, "no such task")),
        ("query_reply-bytes", QueryReply(True, {"blob": b"\x00\x01", "n": -3})),
        ("task_put", TaskPut(task)), ("task_put-minimal", TaskPut(minimal)),
        ("task_put-ints", TaskPut(int_spec)),
        ("task_put_ack", TaskPutAck("t-1", 5, TaskState.RUNNING, ok=False, error="id taken")),
        ("task_put_ack-ok", TaskPutAck("t-1", 1, TaskState.PENDING)),
        ("task_put-submission", TaskPut(minimal, submission=True)),
        ("task_put_ack-all_replicas", TaskPutAck("t-1", 1, TaskState.PENDING, all_replicas=True)),
        ("task_put_ack-submitted", TaskPutAck("t-1", 2, TaskState.PLACED, all_replicas=True,
                                              submitted=1700000000.5)),
        ("task_get", TaskGet("t-1", 3)),
        ("task_get_reply", TaskGetReply("t-1", 3, task)),
        ("task_get_reply-none", TaskGetReply("t-1", 3, None)),
        ("task_list", TaskList(4, state=int(TaskState.FAILED), limit=50)),
        ("task_list-default", TaskList(4)),
        ("task_list_reply", TaskListReply(4, (task, minimal), more=12)),
        ("task_list_reply-empty", TaskListReply(4)),
        ("task_cancel", TaskCancel("t-1", 5)),
        ("task_cancel_reply", TaskCancelReply("t-1", 5, True, TaskState.CANCELLED, "")),
        ("task_cancel_reply-no", TaskCancelReply("t-1", 5, False, error="not the owner")),
        ("bid_request", BidRequest("t-1", 2, 1, 2.5, 1 << 30, 0, {"zone": "eu"}, 60.0)),
        ("bid_request-ints", BidRequest("t-1", 2, 1, 2, 0, 1, {}, 60)),
        ("bid", Bid("t-1", 2, 1, True, headroom=-1.5, load=0.75, queued=3)),
        ("bid-no", Bid("t-1", 2, 1, False, reason="no gpu")),
        ("bid-ints", Bid("t-1", 2, 1, True, headroom=3, load=1, queued=0)),
        ("award", Award(task, 1)), ("award-minimal", Award(minimal, 0)),
        ("award_ack", AwardAck("t-1", 2, True, started=1.7e9)),
        ("award_ack-no", AwardAck("t-1", 2, False, reason="busy")),
        ("award_ack-int", AwardAck("t-1", 2, True, started=17)),
        ("release", Release("t-1", 2, 1)),
        ("task_report", TaskReport("t-1", 2, TaskState.FAILED, 3, "exit code 3", 1.7e9,
                                   1.7e9 + 4, "o", "e")),
        ("task_report-running", TaskReport("t-1", 2, TaskState.RUNNING)),
        ("task_report-ints", TaskReport("t-1", 2, TaskState.SUCCEEDED, 0, "", 5, 9)),
        ("report_ack", ReportAck("t-1", 2, keep=False)),
        ("report_ack-keep", ReportAck("t-1", 2, keep=True)),
    ]
    envelopes = [("n1", "tcp://10.0.0.1:7946", 42), ("client:bob", "", 0),
                 ("ñ", "sim://ñ", 2**63 - 1)]  # fmt: skip
    return [(f"{name}/{i}", Message(s, a, q, b))
            for name, b in bodies for i, (s, a, q) in enumerate(envelopes)]


SAMPLES = samples()


def test_the_samples_are_the_golden_ones_and_cover_every_kind():
    assert [name for name, _ in SAMPLES] == list(GOLDEN)
    assert {m.kind for _, m in SAMPLES} == set(kinds())


@pytest.mark.parametrize(("name", "msg"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_encoding_is_byte_identical_to_the_golden_bytes(name, msg):
    assert wire.encode(msg).hex() == GOLDEN[name]


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_bytes_decode_and_encode_back_to_themselves(name):
    data = bytes.fromhex(GOLDEN[name])
    assert wire.encode(wire.decode(data)) == data
