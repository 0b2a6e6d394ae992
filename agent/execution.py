"""The contract between the placement core and whatever runs tasks (real or simulated).

The core never runs anything itself: among the effects each of its calls returns
(`agent.effects`) are `StartTask` / `StopTask`, and the shell tells it how each run ended by
calling `core.on_task_exit(now, exit)` with a `TaskExit`. The real shell hands them to
`agent.executor.Executor` (subprocesses); the simulator hands them to
`scenarios.sim.workload.SimExecutor` (work that consumes virtual time).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.tasks import TaskSpec, TaskState


@dataclass(frozen=True, slots=True)
class StartTask:
    task_id: str
    attempt: int
    spec: TaskSpec


@dataclass(frozen=True, slots=True)
class StopTask:
    """Kill the run of this attempt if it is still running (cancelled, or superseded)."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class TaskExit:
    """How one run ended. `state` is SUCCEEDED, FAILED or CANCELLED (stopped on request)."""

    task_id: str
    attempt: int
    state: TaskState
    exit_code: int = 0
    reason: str = ""  # e.g. "exit code 3", "timed out after 10 s", "command not found: foo"
    stdout: str = ""  # bounded tails
    stderr: str = ""
