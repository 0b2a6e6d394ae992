"""The placement protocol's messages — task records, lookups, negotiation, execution reports —
with their wire form and registration (`gossip.kinds`): all handled by the placement core.

Each kind is registered once beside its dataclass, with its encoder and its decoder; a decoder
reads untrusted input only through `gossip.fields` and `agent.tasks`, so a malformed field
raises `WireError`. They ride each peer's stream, never a datagram.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.tasks import (
    MAX_TASK_CPUS,
    TaskRecord,
    TaskState,
    decode_record,
    encode_record,
    exit_status,
    output_tail,
    reason_text,
    seconds,
    task_state,
    timestamp,
)
from gossip.fields import array, boolean, ident, integer, label_table, number
from gossip.kinds import register

PLACEMENT = "placement"  # the handler of every kind here: `agent.placement.PlacementCore`

MAX_LIST_RECORDS = 10_000  # records in one TaskListReply, and the largest TaskList.limit
MAX_HEADROOM = 1e6  # |Bid.headroom|, in CPUs
MAX_BID_LOAD = 1e6

# ---------------------------------------------------------------- task records (replication)


@dataclass(frozen=True, slots=True)
class TaskPut:
    """Store (or update) a replica of a task record; answered with TaskPutAck. `submission`:
    an entry's new record, sent to its owner alone, which answers once every live replica
    holds it (`TaskPutAck.all_replicas`) if it can."""

    record: TaskRecord
    submission: bool = False


def _encode_task_put(b: TaskPut) -> list:
    return [encode_record(b.record), b.submission]


def _decode_task_put(b: list) -> TaskPut:
    record, submission = array(b, "task_put", 2)
    return TaskPut(decode_record(record), boolean(submission, "task_put.submission"))


register(40, "TASK_PUT", TaskPut, _encode_task_put, _decode_task_put, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class TaskPutAck:
    """`ok` False: the id is taken by a different task (`error` says so). `state`/`version`
    are the replica's copy after the write, so a resubmission learns the task's progress.
    `all_replicas`: the owner's answer to a submission — every live replica holds the record,
    not only the sender. `submitted`: when the copy's task was submitted (its entry's clock;
    0 if unknown): an entry tells its own new task, which its owner may already have placed,
    from one that existed before under the same id."""

    task_id: str
    version: int
    state: TaskState
    ok: bool = True
    error: str = ""
    all_replicas: bool = False
    submitted: float = 0.0


def _encode_task_put_ack(b: TaskPutAck) -> list:
    return [b.task_id, b.version, int(b.state), b.ok, b.error, b.all_replicas, b.submitted]


def _decode_task_put_ack(b: list) -> TaskPutAck:
    task_id, version, state, ok, error, everywhere, submitted = array(b, "task_put_ack", 7)
    return TaskPutAck(ident(task_id, "task_put_ack.task_id"),
                      integer(version, "task_put_ack.version"),
                      task_state(state, "task_put_ack.state"), boolean(ok, "task_put_ack.ok"),
                      reason_text(error, "task_put_ack.error"),
                      boolean(everywhere, "task_put_ack.all_replicas"),
                      number(submitted, "task_put_ack.submitted"))  # fmt: skip


register(41, "TASK_PUT_ACK", TaskPutAck, _encode_task_put_ack, _decode_task_put_ack,
         handler=PLACEMENT)  # fmt: skip

# ---------------------------------------------------------------- lookups between agents


@dataclass(frozen=True, slots=True)
class TaskGet:
    task_id: str
    req: int  # the asker's request number, echoed back


def _encode_task_get(b: TaskGet) -> list:
    return [b.task_id, b.req]


def _decode_task_get(b: list) -> TaskGet:
    task_id, req = array(b, "task_get", 2)
    return TaskGet(ident(task_id, "task_get.task_id"), integer(req, "task_get.req"))


register(42, "TASK_GET", TaskGet, _encode_task_get, _decode_task_get, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class TaskGetReply:
    task_id: str
    req: int
    record: TaskRecord | None = None


def _encode_task_get_reply(b: TaskGetReply) -> list:
    return [b.task_id, b.req, None if b.record is None else encode_record(b.record)]


def _decode_task_get_reply(b: list) -> TaskGetReply:
    task_id, req, record = array(b, "task_get_reply", 3)
    return TaskGetReply(ident(task_id, "task_get_reply.task_id"),
                        integer(req, "task_get_reply.req"),
                        None if record is None else decode_record(record))  # fmt: skip


register(43, "TASK_GET_REPLY", TaskGetReply, _encode_task_get_reply, _decode_task_get_reply,
         handler=PLACEMENT)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskList:
    """Records this node holds as their owner; `state` -1 = any."""

    req: int
    state: int = -1
    limit: int = 1000


def _encode_task_list(b: TaskList) -> list:
    return [b.req, int(b.state), b.limit]


def _decode_task_list(b: list) -> TaskList:
    req, state, limit = array(b, "task_list", 3)
    return TaskList(integer(req, "task_list.req"),
                    integer(state, "task_list.state", -1, max(TaskState)),
                    integer(limit, "task_list.limit", 1, MAX_LIST_RECORDS))  # fmt: skip


register(44, "TASK_LIST", TaskList, _encode_task_list, _decode_task_list, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class TaskListReply:
    """Summaries of the records asked for, newest first; `more` matched but did not fit."""

    req: int
    records: tuple[TaskRecord, ...] = ()
    more: int = 0


def _encode_task_list_reply(b: TaskListReply) -> list:
    return [b.req, [encode_record(r) for r in b.records], b.more]


def _decode_task_list_reply(b: list) -> TaskListReply:
    req, records, more = array(b, "task_list_reply", 3)
    records = array(records, "task_list_reply.records", most=MAX_LIST_RECORDS)
    return TaskListReply(integer(req, "task_list_reply.req"),
                         tuple(decode_record(r) for r in records),
                         integer(more, "task_list_reply.more"))  # fmt: skip


register(45, "TASK_LIST_REPLY", TaskListReply, _encode_task_list_reply, _decode_task_list_reply,
         handler=PLACEMENT)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskCancel:
    task_id: str
    req: int


def _encode_task_cancel(b: TaskCancel) -> list:
    return [b.task_id, b.req]


def _decode_task_cancel(b: list) -> TaskCancel:
    task_id, req = array(b, "task_cancel", 2)
    return TaskCancel(ident(task_id, "task_cancel.task_id"), integer(req, "task_cancel.req"))


register(46, "TASK_CANCEL", TaskCancel, _encode_task_cancel, _decode_task_cancel,
         handler=PLACEMENT)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskCancelReply:
    """`ok` True: the sender owns the record and it is now terminal (`state`)."""

    task_id: str
    req: int
    ok: bool
    state: TaskState = TaskState.PENDING
    error: str = ""


def _encode_task_cancel_reply(b: TaskCancelReply) -> list:
    return [b.task_id, b.req, b.ok, int(b.state), b.error]


def _decode_task_cancel_reply(b: list) -> TaskCancelReply:
    task_id, req, ok, state, error = array(b, "task_cancel_reply", 5)
    return TaskCancelReply(
        ident(task_id, "task_cancel_reply.task_id"), integer(req, "task_cancel_reply.req"),
        boolean(ok, "task_cancel_reply.ok"), task_state(state, "task_cancel_reply.state"),
        reason_text(error, "task_cancel_reply.error"),
    )  # fmt: skip


register(47, "TASK_CANCEL_REPLY", TaskCancelReply, _encode_task_cancel_reply,
         _decode_task_cancel_reply, handler=PLACEMENT)  # fmt: skip

# ---------------------------------------------------------------- placement negotiation


@dataclass(frozen=True, slots=True)
class BidRequest:
    """Would you run this? A yes tentatively reserves the resources under a lease."""

    task_id: str
    attempt: int
    round: int  # one per negotiation round of one attempt
    cpus: float
    memory: int
    gpus: int
    labels: dict[str, str]
    expected: float  # seconds


def _encode_bid_request(b: BidRequest) -> list:
    return [b.task_id, b.attempt, b.round, float(b.cpus), int(b.memory), int(b.gpus),
            dict(b.labels), float(b.expected)]  # fmt: skip


def _decode_bid_request(b: list) -> BidRequest:
    task_id, attempt, round_, cpus, memory, gpus, labels, expected = array(b, "bid_request", 8)
    return BidRequest(
        task_id=ident(task_id, "bid_request.task_id"),
        attempt=integer(attempt, "bid_request.attempt"),
        round=integer(round_, "bid_request.round"),
        cpus=number(cpus, "bid_request.cpus", 0.0, MAX_TASK_CPUS),
        memory=integer(memory, "bid_request.memory"),
        gpus=integer(gpus, "bid_request.gpus"),
        labels=label_table(labels),
        expected=seconds(expected, "bid_request.expected"),
    )


register(50, "BID_REQUEST", BidRequest, _encode_bid_request, _decode_bid_request,
         handler=PLACEMENT)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bid:
    task_id: str
    attempt: int
    round: int
    ok: bool
    headroom: float = 0.0  # CPUs the bidder expects to have free over the task's run, after it
    load: float = 0.0  # the bidder's current observed load, 0..1
    queued: int = 0  # tasks running or reserved on the bidder
    reason: str = ""  # why not, when ok is False


def _encode_bid(b: Bid) -> list:
    return [b.task_id, b.attempt, b.round, b.ok, float(b.headroom), float(b.load), b.queued,
            b.reason]  # fmt: skip


def _decode_bid(b: list) -> Bid:
    task_id, attempt, round_, ok, headroom, load, queued, reason = array(b, "bid", 8)
    return Bid(
        task_id=ident(task_id, "bid.task_id"),
        attempt=integer(attempt, "bid.attempt"),
        round=integer(round_, "bid.round"),
        ok=boolean(ok, "bid.ok"),
        headroom=number(headroom, "bid.headroom", -MAX_HEADROOM, MAX_HEADROOM),
        load=number(load, "bid.load", 0.0, MAX_BID_LOAD),
        queued=integer(queued, "bid.queued"),
        reason=reason_text(reason, "bid.reason"),
    )


register(51, "BID", Bid, _encode_bid, _decode_bid, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class Award:
    """The task is yours: start `record.attempt` (the record names the spec and the owners)."""

    record: TaskRecord
    round: int


def _encode_award(b: Award) -> list:
    return [encode_record(b.record), b.round]


def _decode_award(b: list) -> Award:
    record, round_ = array(b, "award", 2)
    return Award(decode_record(record), integer(round_, "award.round"))


register(52, "AWARD", Award, _encode_award, _decode_award, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class AwardAck:
    task_id: str
    attempt: int
    ok: bool
    started: float = 0.0
    reason: str = ""


def _encode_award_ack(b: AwardAck) -> list:
    return [b.task_id, b.attempt, b.ok, float(b.started), b.reason]


def _decode_award_ack(b: list) -> AwardAck:
    task_id, attempt, ok, started, reason = array(b, "award_ack", 5)
    return AwardAck(ident(task_id, "award_ack.task_id"), integer(attempt, "award_ack.attempt"),
                    boolean(ok, "award_ack.ok"), timestamp(started, "award_ack.started"),
                    reason_text(reason, "award_ack.reason"))  # fmt: skip


register(53, "AWARD_ACK", AwardAck, _encode_award_ack, _decode_award_ack, handler=PLACEMENT)


@dataclass(frozen=True, slots=True)
class Release:
    """You lost the bid: drop the lease."""

    task_id: str
    attempt: int
    round: int


def _encode_release(b: Release) -> list:
    return [b.task_id, b.attempt, b.round]


def _decode_release(b: list) -> Release:
    task_id, attempt, round_ = array(b, "release", 3)
    return Release(ident(task_id, "release.task_id"), integer(attempt, "release.attempt"),
                   integer(round_, "release.round"))  # fmt: skip


register(54, "RELEASE", Release, _encode_release, _decode_release, handler=PLACEMENT)

# ---------------------------------------------------------------- execution reports


@dataclass(frozen=True, slots=True)
class TaskReport:
    """Runner -> owner: the attempt is still running (state RUNNING) or has ended."""

    task_id: str
    attempt: int
    state: TaskState
    exit_code: int = 0
    reason: str = ""
    started: float = 0.0
    finished: float = 0.0
    stdout: str = ""
    stderr: str = ""


def _encode_task_report(b: TaskReport) -> list:
    return [b.task_id, b.attempt, int(b.state), int(b.exit_code), b.reason, float(b.started),
            float(b.finished), b.stdout, b.stderr]  # fmt: skip


def _decode_task_report(b: list) -> TaskReport:
    task_id, attempt, state, code, reason, started, finished, out, err = array(
        b, "task_report", 9
    )
    return TaskReport(
        task_id=ident(task_id, "task_report.task_id"),
        attempt=integer(attempt, "task_report.attempt"),
        state=task_state(state, "task_report.state"),
        exit_code=exit_status(code, "task_report.exit_code"),
        reason=reason_text(reason, "task_report.reason"),
        started=timestamp(started, "task_report.started"),
        finished=timestamp(finished, "task_report.finished"),
        stdout=output_tail(out, "task_report.stdout"),
        stderr=output_tail(err, "task_report.stderr"),
    )


register(56, "TASK_REPORT", TaskReport, _encode_task_report, _decode_task_report,
         handler=PLACEMENT)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReportAck:
    """`keep` False: this attempt is not (or no longer) wanted; stop it and forget it."""

    task_id: str
    attempt: int
    keep: bool


def _encode_report_ack(b: ReportAck) -> list:
    return [b.task_id, b.attempt, b.keep]


def _decode_report_ack(b: list) -> ReportAck:
    task_id, attempt, keep = array(b, "report_ack", 3)
    return ReportAck(ident(task_id, "report_ack.task_id"), integer(attempt, "report_ack.attempt"),
                     boolean(keep, "report_ack.keep"))  # fmt: skip


register(57, "REPORT_ACK", ReportAck, _encode_report_ack, _decode_report_ack, handler=PLACEMENT)
