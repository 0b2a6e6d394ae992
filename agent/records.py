"""Task records: which copy wins, and what a valid, feasible task is.

Merge rule (`newer`): a terminal record beats a non-terminal one (a finished task never goes
back to running); otherwise, and between two terminal copies, the higher (version, writer,
attempt) wins. Only the owner of a record writes new versions, and it always writes one above
every version it has seen, so in a cluster where views agree this order is simply "latest".
"""

from __future__ import annotations

import math

from agent.ledger import EPS, Demand
from agent.tasks import MAX_OUTPUT_TAIL, TaskRecord, TaskSpec, record_size
from gossip.messages import ResourceRecord
from gossip.wire import MAX_MESSAGE_BYTES

# A record is the spec plus two output tails (4 bytes a character at most, in UTF-8) and some
# small fields; it must fit one message (TaskPut, Award, a status answer) once it has output.
MAX_SPEC_BYTES = MAX_MESSAGE_BYTES - 2 * 4 * MAX_OUTPUT_TAIL - 64 * 1024

# A record's version counts its owners' writes (a few per placement attempt): a copy claiming
# to be more than this many writes ahead of ours was forged, and taking it in would let its
# owner's next write pass 2^63 - 1, where it can no longer be sent to anyone.
MAX_VERSION_STEP = 1 << 20


def plausible(rec: TaskRecord, held: TaskRecord | None) -> bool:
    """Whether `rec` could follow `held` (our copy, or None) by the owners' writes alone."""
    return rec.version <= (held.version if held is not None else 1) + MAX_VERSION_STEP


def rank(r: TaskRecord) -> tuple:
    return (r.state.terminal, r.version, r.writer, r.attempt, r.replicas)


def newer(a: TaskRecord, b: TaskRecord | None) -> bool:
    """True if `a` should replace `b`."""
    return b is None or rank(a) > rank(b)


def demand_of(spec: TaskSpec) -> Demand:
    return Demand(float(spec.cpus), int(spec.memory), int(spec.gpus))


def labels_match(required: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in required.items())


def could_run(rec: ResourceRecord | None, spec: TaskSpec) -> bool:
    """Whether a node with this published capacity could ever run the task."""
    return (
        rec is not None
        and rec.cpus + EPS >= spec.cpus
        and rec.memory >= spec.memory
        and rec.gpus >= spec.gpus
        and labels_match(spec.labels, rec.labels)
    )


def spec_problem(spec: TaskSpec) -> str:
    """Why a spec is unacceptable, or "" if it is fine (sizes, times, command)."""
    if not spec.argv or not spec.argv[0]:
        return "no command given"
    for name, v in (("cpus", spec.cpus), ("timeout", spec.timeout), ("deadline", spec.deadline),
                    ("expected run time", spec.expected)):  # fmt: skip
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            return f"{name} must be a non-negative number, got {v!r}"
    for name, v in (("memory", spec.memory), ("gpus", spec.gpus)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return f"{name} must be a non-negative integer, got {v!r}"
    if spec.cpus <= 0 and spec.memory <= 0 and spec.gpus <= 0:
        return "a task must ask for some cpus, memory or gpus"
    size = record_size(TaskRecord("", spec))
    if size > MAX_SPEC_BYTES:
        return (f"the task's command, environment and labels take {size} bytes encoded; at most "
                f"{MAX_SPEC_BYTES} (its record, with output, must fit one message)")
    return ""


def unplaceable_reason(spec: TaskSpec, nodes: list[ResourceRecord]) -> str:
    """Why no known node could ever run the task ("" if one could)."""
    if any(could_run(r, spec) for r in nodes):
        return ""
    if not nodes:
        return "no node is known"
    want = f"{spec.cpus:g} cpus, {spec.memory} bytes of memory, {spec.gpus} gpus"
    if spec.labels:
        want += " and labels " + ",".join(f"{k}={v}" for k, v in sorted(spec.labels.items()))
    best_cpu = max(r.cpus for r in nodes)
    best_mem = max(r.memory for r in nodes)
    best_gpu = max(r.gpus for r in nodes)
    return (
        f"no node could ever run it: it needs {want}; the largest node has "
        f"{best_cpu:g} cpus, {best_mem} bytes, {best_gpu} gpus"
    )


_SPEC_FIELDS = {
    "argv", "cpus", "memory", "gpus", "labels", "env", "cwd", "timeout", "deadline", "expected",
}


def _str_map(v: object, what: str) -> tuple[dict[str, str] | None, str]:
    if v is None:
        return {}, ""
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and k and isinstance(x, str) for k, x in v.items()
    ):
        return None, f"{what} must be a table of non-empty names to strings"
    return dict(v), ""


def spec_from_args(raw: object) -> tuple[TaskSpec | None, str]:
    """Build a TaskSpec from a client's submit arguments, or say what is wrong with them."""
    if not isinstance(raw, dict):
        return None, "submit needs a spec table"
    unknown = sorted(set(raw) - _SPEC_FIELDS)
    if unknown:
        return None, f"unknown spec field(s): {', '.join(map(str, unknown))}"
    argv = raw.get("argv")
    if not isinstance(argv, list | tuple) or not argv or not all(
        isinstance(a, str) for a in argv
    ):
        return None, "argv must be a non-empty list of strings (the command to run)"
    labels, problem = _str_map(raw.get("labels"), "labels")
    if labels is None:
        return None, problem
    env, problem = _str_map(raw.get("env"), "env")
    if env is None:
        return None, problem
    cwd = raw.get("cwd", "")
    if not isinstance(cwd, str):
        return None, "cwd must be a string"
    nums = {}
    for name, default in (("cpus", 1.0), ("timeout", 0.0), ("deadline", 0.0),
                          ("expected", 60.0)):  # fmt: skip
        v = raw.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None, f"{name} must be a number, got {v!r}"
        nums[name] = float(v)
    ints = {}
    for name in ("memory", "gpus"):
        v = raw.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int):
            return None, f"{name} must be an integer, got {v!r}"
        ints[name] = v
    spec = TaskSpec(argv=tuple(argv), labels=labels, env=env, cwd=cwd, **nums, **ints)
    problem = spec_problem(spec)
    return (None, problem) if problem else (spec, "")
