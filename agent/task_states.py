"""The task life cycle: which state a record may move to from which, in one place.

Why a table: states are written in several places of the owner (placement, award acks, runner
reports, cancels, runner loss), one of them on a peer's word. The owner's `write` checks every
change against this table, and what a runner reports is checked before it is written, so a
forged or buggy report cannot move a record backwards (a finished task made pending again and
run twice) or into a state no run ends in.
"""

from __future__ import annotations

from agent.tasks import TaskState

P, PL, R = TaskState.PENDING, TaskState.PLACED, TaskState.RUNNING
OK, FAIL, CANCEL = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED

# state -> the states it may change to (staying in a state is always allowed: a record is
# rewritten with new fields, e.g. its replicas, in the same state). Terminal states are final.
# REJECTED is part of the wire format but no record is ever put in it.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    P: frozenset({PL, CANCEL}),  # awarded; cancelled before placement
    # started (award acked); back to negotiation (award refused, runner lost); a result reported
    # before the start was (a short task); cancelled
    PL: frozenset({R, P, OK, FAIL, CANCEL}),
    R: frozenset({P, OK, FAIL, CANCEL}),  # runner lost: re-placed as a new attempt; its result
    OK: frozenset(),
    FAIL: frozenset(),
    CANCEL: frozenset(),
    TaskState.REJECTED: frozenset(),
}

# What a runner may say about its own run: started, or how it ended.
RUNNER_REPORTS: frozenset[TaskState] = frozenset({R, OK, FAIL, CANCEL})
# The states in which a record names a runner: only then is there a run to report on (a
# pending record's runner is empty, and a sender with an empty id must not pass for it).
HAS_RUNNER: frozenset[TaskState] = frozenset({PL, R})


class IllegalTransition(ValueError):
    """A state change the life cycle does not allow: a bug in the owner, never a peer's input."""


def allowed(old: TaskState, new: TaskState) -> bool:
    return new == old or new in TRANSITIONS[old]


def check(task_id: str, old: TaskState, new: TaskState) -> None:
    """Raise IllegalTransition unless `old` may become `new`."""
    if not allowed(old, new):
        raise IllegalTransition(f"task {task_id}: {old.label} -> {new.label} is not allowed")


def reportable(current: TaskState, reported: TaskState) -> bool:
    """Whether a runner's report of `reported` may be applied to a record in `current`."""
    return current in HAS_RUNNER and reported in RUNNER_REPORTS and allowed(current, reported)
