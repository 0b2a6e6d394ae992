"""What a task is — its spec, its state, its replicated record — and their wire form.

The placement kinds (`agent.messages`) carry these; their decoders check a record's every field
here, with the task limits below, as `gossip.fields` checks the generic ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from gossip.fields import (
    WireError,
    array,
    fail,
    ident,
    integer,
    label_table,
    number,
    text,
)

# string lengths count characters, like MAX_ID_LEN; task ids are bounded by MAX_ID_LEN
MAX_ARGV = 4096  # entries in a task's argv (at least one: the program)
MAX_ARG_LEN = 64 * 1024  # one argv entry
MAX_ENV = 256  # entries in a task's env (keys are bounded by MAX_ID_LEN)
MAX_ENV_VALUE_LEN = 64 * 1024
MAX_CWD_LEN = 4096
MAX_REASON_LEN = 4096  # reason / error strings
MAX_OUTPUT_TAIL = 64 * 1024  # stdout / stderr tails, each
MAX_REPLICAS = 64  # node ids in a task record's replica set
MAX_TASK_CPUS = 1e6
MAX_DURATION = 1e9  # seconds: timeout, deadline, expected
MAX_TIME = 1e12  # timestamps (submitted, placed, started, finished), seconds since the epoch
MIN_EXIT_CODE, MAX_EXIT_CODE = -(2**31), 2**31 - 1


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


# ---------------------------------------------------------------- wire form


def _encode_spec(s: TaskSpec) -> list:
    return [
        list(s.argv), float(s.cpus), int(s.memory), int(s.gpus), dict(s.labels), dict(s.env),
        s.cwd, float(s.timeout), float(s.deadline), float(s.expected), s.submitter,
    ]  # fmt: skip


def encode_record(r: TaskRecord) -> list:
    return [
        r.id, _encode_spec(r.spec), int(r.state), r.version, r.writer, list(r.replicas),
        r.attempt, r.node, r.node_addr, int(r.exit_code), r.reason, float(r.submitted),
        float(r.placed), float(r.started), float(r.finished), r.stdout, r.stderr,
        r.node_generation,
    ]  # fmt: skip


def record_size(r: TaskRecord) -> int:
    """Bytes `r` takes inside an encoded message (to fill a reply without overflowing it)."""
    return len(msgpack.packb(encode_record(r), use_bin_type=True))


def task_state(v: Any, what: str) -> TaskState:
    return TaskState(integer(v, what, 0, max(TaskState)))


def timestamp(v: Any, what: str) -> float:
    return number(v, what, 0.0, MAX_TIME)


def seconds(v: Any, what: str) -> float:
    return number(v, what, 0.0, MAX_DURATION)


def reason_text(v: Any, what: str) -> str:
    return text(v, what, MAX_REASON_LEN)


def output_tail(v: Any, what: str) -> str:
    return text(v, what, MAX_OUTPUT_TAIL)


def exit_status(v: Any, what: str) -> int:
    return integer(v, what, MIN_EXIT_CODE, MAX_EXIT_CODE)


def _decode_argv(v: Any) -> tuple[str, ...]:
    argv = array(v, "task.argv", most=MAX_ARGV)
    if not argv:
        raise WireError("malformed", "task.argv: empty")
    ident(argv[0], "task.argv[0]", MAX_ARG_LEN)
    return tuple(text(a, "task.argv[]", MAX_ARG_LEN) for a in argv)


def _decode_env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_ENV:
        raise fail("task.env", v)
    return {ident(k, "task.env key"): text(x, "task.env value", MAX_ENV_VALUE_LEN)
            for k, x in v.items()}  # fmt: skip


def _decode_spec(v: Any) -> TaskSpec:
    f = array(v, "task.spec", 11)
    return TaskSpec(
        argv=_decode_argv(f[0]),
        cpus=number(f[1], "task.cpus", 0.0, MAX_TASK_CPUS),
        memory=integer(f[2], "task.memory"),
        gpus=integer(f[3], "task.gpus"),
        labels=label_table(f[4]),
        env=_decode_env(f[5]),
        cwd=text(f[6], "task.cwd", MAX_CWD_LEN),
        timeout=seconds(f[7], "task.timeout"),
        deadline=seconds(f[8], "task.deadline"),
        expected=seconds(f[9], "task.expected"),
        submitter=text(f[10], "task.submitter"),
    )


def decode_record(v: Any) -> TaskRecord:
    f = array(v, "task.record", 18)
    replicas = array(f[5], "task.replicas", most=MAX_REPLICAS)
    return TaskRecord(
        id=ident(f[0], "task.id"),
        spec=_decode_spec(f[1]),
        state=task_state(f[2], "task.state"),
        version=integer(f[3], "task.version"),
        writer=text(f[4], "task.writer"),
        replicas=tuple(ident(n, "task.replicas[]") for n in replicas),
        attempt=integer(f[6], "task.attempt"),
        node=text(f[7], "task.node"),
        node_addr=text(f[8], "task.node_addr"),
        exit_code=exit_status(f[9], "task.exit_code"),
        reason=reason_text(f[10], "task.reason"),
        submitted=timestamp(f[11], "task.submitted"),
        placed=timestamp(f[12], "task.placed"),
        started=timestamp(f[13], "task.started"),
        finished=timestamp(f[14], "task.finished"),
        stdout=output_tail(f[15], "task.stdout"),
        stderr=output_tail(f[16], "task.stderr"),
        node_generation=integer(f[17], "task.node_generation"),
    )
