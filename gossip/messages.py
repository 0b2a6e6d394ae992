"""Typed protocol messages: what cores produce and consume, independent of the byte encoding.

Cores only ever see these dataclasses; `gossip.wire` turns them into bytes and back and is the
single place where untrusted input is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

# 2: task specs name their submitter; 3: loads in thousandths (below); 4: push-pull sends a
# digest first and then only the entries that differ (Sync, SyncReply, SyncPush)
PROTOCOL_VERSION = 4

# Loads and forecasts in resource records are kept, and sent, in thousandths: one or two bytes
# each on the wire instead of nine (most of a record), and finer than any placement decision.
LOAD_STEPS = 1000


def quantized(x: float) -> float:
    """`x` as a resource record holds it: the wire carries round(x * LOAD_STEPS) exactly."""
    return round(x * LOAD_STEPS) / LOAD_STEPS


class Kind(IntEnum):
    """Message kinds on the wire. Values are part of the protocol: never renumber."""

    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    SYNC = 5
    SYNC_REPLY = 6
    GOSSIP = 7
    SYNC_PUSH = 8
    # client requests (CLI -> any agent), answered on the same connection
    QUERY = 32
    QUERY_REPLY = 33
    # task records (replication) and lookups between agents
    TASK_PUT = 40
    TASK_PUT_ACK = 41
    TASK_GET = 42
    TASK_GET_REPLY = 43
    TASK_LIST = 44
    TASK_LIST_REPLY = 45
    TASK_CANCEL = 46
    TASK_CANCEL_REPLY = 47
    # placement negotiation
    BID_REQUEST = 50
    BID = 51
    AWARD = 52
    AWARD_ACK = 53
    RELEASE = 54
    # execution reports (runner -> owner of the task record)
    TASK_REPORT = 56
    REPORT_ACK = 57


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


@dataclass(frozen=True, slots=True)
class SyncReply:
    """2 of 3: in full, what the Sync's digest lacked or held older; by id, the members and
    records it held newer, for the third message."""

    members: tuple[MemberUpdate, ...]
    resources: tuple[ResourceRecord, ...]
    want_members: tuple[str, ...] = ()
    want_resources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncPush:
    """3 of 3: the entries a SyncReply asked for."""

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


class TaskState(IntEnum):
    """Where a task is in its life. Values are part of the protocol."""

    PENDING = 0  # accepted and replicated, waiting for a node
    PLACED = 1  # awarded to a node that has not yet confirmed it started
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5
    REJECTED = 6

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def terminal(self) -> bool:
        return self >= TaskState.SUCCEEDED


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What the user asked for. Sizes are what the task reserves on the node that runs it."""

    argv: tuple[str, ...]
    cpus: float = 1.0
    memory: int = 0  # bytes
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # required node labels, all must match
    env: dict[str, str] = field(default_factory=dict)  # added to the agent's environment
    cwd: str = ""  # "" = the agent's working directory
    timeout: float = 0.0  # seconds of running before the task is killed; 0 = no limit
    deadline: float = 0.0  # SLA: seconds after submission by which it should finish; 0 = none
    expected: float = 60.0  # expected run time in seconds: the horizon bidders forecast over
    # who submitted it (client name; "" = an agent or a plain cluster). Set by the entry agent
    # from the authenticated client, never taken from the client's request.
    submitter: str = ""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The replicated record of one task. See `agent.records.newer` for which copy wins."""

    id: str
    spec: TaskSpec
    state: TaskState = TaskState.PENDING
    version: int = 1
    writer: str = ""  # the node that wrote this version (breaks ties between equal versions)
    replicas: tuple[str, ...] = ()  # node ids holding the record, in ownership order
    attempt: int = 0  # bumped every time the task is placed; reports name their attempt
    node: str = ""  # the node running (or that ran) the current attempt
    node_addr: str = ""
    exit_code: int = 0
    reason: str = ""  # why it failed / was rejected / was cancelled
    submitted: float = 0.0  # times on the writers' clocks (wall clock in the real shell)
    placed: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    stdout: str = ""  # bounded tails, filled when the task ends
    stderr: str = ""
    # the generation (process life, see `gossip.membership`) of `node` when it was awarded the
    # attempt: a run does not outlive its process, so a later generation there means it is gone
    node_generation: int = 0


@dataclass(frozen=True, slots=True)
class TaskPut:
    """Store (or update) a replica of a task record; answered with TaskPutAck."""

    record: TaskRecord


@dataclass(frozen=True, slots=True)
class TaskPutAck:
    """`ok` False: the id is taken by a different task (`error` says so). `state`/`version`
    are the replica's copy after the write, so a resubmission learns the task's progress."""

    task_id: str
    version: int
    state: TaskState
    ok: bool = True
    error: str = ""


@dataclass(frozen=True, slots=True)
class TaskGet:
    task_id: str
    req: int  # the asker's request number, echoed back


@dataclass(frozen=True, slots=True)
class TaskGetReply:
    task_id: str
    req: int
    record: TaskRecord | None = None


@dataclass(frozen=True, slots=True)
class TaskList:
    """Records this node holds as their owner; `state` -1 = any."""

    req: int
    state: int = -1
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class TaskListReply:
    """Summaries of the records asked for, newest first; `more` matched but did not fit."""

    req: int
    records: tuple[TaskRecord, ...] = ()
    more: int = 0


@dataclass(frozen=True, slots=True)
class TaskCancel:
    task_id: str
    req: int


@dataclass(frozen=True, slots=True)
class TaskCancelReply:
    """`ok` True: the sender owns the record and it is now terminal (`state`)."""

    task_id: str
    req: int
    ok: bool
    state: TaskState = TaskState.PENDING
    error: str = ""


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


@dataclass(frozen=True, slots=True)
class Award:
    """The task is yours: start `record.attempt` (the record names the spec and the owners)."""

    record: TaskRecord
    round: int


@dataclass(frozen=True, slots=True)
class AwardAck:
    task_id: str
    attempt: int
    ok: bool
    started: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """You lost the bid: drop the lease."""

    task_id: str
    attempt: int
    round: int


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


@dataclass(frozen=True, slots=True)
class ReportAck:
    """`keep` False: this attempt is not (or no longer) wanted; stop it and forget it."""

    task_id: str
    attempt: int
    keep: bool


Body = (
    Ping | Ack | PingReq | Nack | Sync | SyncReply | SyncPush | GossipOnly | Query | QueryReply
    | TaskPut | TaskPutAck | TaskGet | TaskGetReply | TaskList | TaskListReply | TaskCancel
    | TaskCancelReply | BidRequest | Bid | Award | AwardAck | Release | TaskReport | ReportAck
)

KIND_OF_BODY: dict[type, Kind] = {
    Ping: Kind.PING,
    Ack: Kind.ACK,
    PingReq: Kind.PING_REQ,
    Nack: Kind.NACK,
    Sync: Kind.SYNC,
    SyncReply: Kind.SYNC_REPLY,
    SyncPush: Kind.SYNC_PUSH,
    GossipOnly: Kind.GOSSIP,
    Query: Kind.QUERY,
    QueryReply: Kind.QUERY_REPLY,
    TaskPut: Kind.TASK_PUT,
    TaskPutAck: Kind.TASK_PUT_ACK,
    TaskGet: Kind.TASK_GET,
    TaskGetReply: Kind.TASK_GET_REPLY,
    TaskList: Kind.TASK_LIST,
    TaskListReply: Kind.TASK_LIST_REPLY,
    TaskCancel: Kind.TASK_CANCEL,
    TaskCancelReply: Kind.TASK_CANCEL_REPLY,
    BidRequest: Kind.BID_REQUEST,
    Bid: Kind.BID,
    Award: Kind.AWARD,
    AwardAck: Kind.AWARD_ACK,
    Release: Kind.RELEASE,
    TaskReport: Kind.TASK_REPORT,
    ReportAck: Kind.REPORT_ACK,
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


# Failure detection and its dissemination ride datagrams (UDP), as memberlist's do: one lost is
# lost, never delivered seconds late behind a stalled stream (TCP turns silent loss into
# retransmission delay, and a partition into a burst of stale news at the heal). State exchange
# (Sync) and placement ride each peer's ZeroMQ stream. Both shells route by this one rule.
DATAGRAM_BODIES = (Ping, Ack, PingReq, Nack, GossipOnly)


def rides_datagram(body: object) -> bool:
    return isinstance(body, DATAGRAM_BODIES)
