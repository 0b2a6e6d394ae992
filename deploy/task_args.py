"""Parsing of the `agora submit` / `status` / `tasks` arguments into what the agent expects.

Everything here is pure (no I/O) and raises `TaskArgError` with a one-line message that names
the offending option, which the CLI prints as ``agora: error: ...``. The checks mirror what the
agent enforces (`agent.records.spec_problem`, the wire limits of `agent.tasks`) so that a
mistake is reported before anything is sent.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

from agent.messages import MAX_LIST_RECORDS
from agent.records import spec_problem
from agent.resources import parse_size
from agent.tasks import (
    MAX_ARG_LEN,
    MAX_ARGV,
    MAX_CWD_LEN,
    MAX_DURATION,
    MAX_ENV,
    MAX_ENV_VALUE_LEN,
    MAX_TASK_CPUS,
    TaskSpec,
    TaskState,
)
from gossip.fields import MAX_ID_LEN, MAX_INT, MAX_LABELS

TASK_STATES: tuple[str, ...] = tuple(s.label for s in TaskState)
TERMINAL_STATES: frozenset[str] = frozenset(s.label for s in TaskState if s.terminal)
DEFAULT_CPUS = TaskSpec.__dataclass_fields__["cpus"].default  # 1.0
DEFAULT_EXPECTED = TaskSpec.__dataclass_fields__["expected"].default  # 60 s

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BARE_RE = re.compile(rf"^{_NUMBER}$")
_PART_RE = re.compile(rf"({_NUMBER})([smhd])", re.IGNORECASE)
_COMPOUND_RE = re.compile(rf"^(?:{_NUMBER}[smhd])+$", re.IGNORECASE)


class TaskArgError(ValueError):
    """A bad task argument; the message is one line for a human and names the option."""


# ---------------------------------------------------------------- scalars


def parse_duration(value: str | float, flag: str, *, allow_zero: bool = True) -> float:
    """Seconds from "90", "90s", "10m", "2h", "1d", "1.5h" or "1h30m" (a bare number = seconds)."""
    if isinstance(value, bool):
        raise TaskArgError(f"{flag} expects a duration such as 90s, 10m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        if _BARE_RE.match(text):
            seconds = float(text)
        elif _COMPOUND_RE.match(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _PART_RE.findall(text))
        elif text.startswith("-"):
            raise TaskArgError(f"{flag} must not be negative, got {value!r}")
        else:
            raise TaskArgError(
                f"{flag} expects a duration such as 90, 90s, 10m, 2h, 1d or 1.5h, got {value!r}"
            )
    if not math.isfinite(seconds) or seconds < 0:
        raise TaskArgError(f"{flag} must be a non-negative duration, got {value!r}")
    if seconds == 0 and not allow_zero:
        raise TaskArgError(f"{flag} must be longer than zero, got {value!r}")
    if seconds > MAX_DURATION:
        raise TaskArgError(f"{flag} is too long ({value!r}; at most {MAX_DURATION:g} s)")
    return seconds


def parse_expected(value: str | float) -> float:
    """The expected run time (``--expect``): a duration longer than zero."""
    return parse_duration(value, "--expect", allow_zero=False)


def parse_cpus(value: str | float) -> float:
    """A positive, finite number of CPUs (fractions allowed, e.g. 0.5)."""
    try:
        cpus = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise TaskArgError(f"--cpus expects a number such as 2 or 0.5, got {value!r}") from None
    if not math.isfinite(cpus) or cpus <= 0:
        raise TaskArgError(f"--cpus must be a positive number, got {value!r}")
    if cpus > MAX_TASK_CPUS:
        raise TaskArgError(f"--cpus is too large ({value!r}; at most {MAX_TASK_CPUS:g})")
    return cpus


def parse_memory(value: str | int) -> int:
    """Bytes from a size such as 4GiB, 512MiB, 2GB or 1048576 (see `agent.resources`)."""
    if isinstance(value, str) and value.strip().startswith("-"):
        raise TaskArgError(f"--mem must not be negative, got {value!r}")
    try:
        size = parse_size(value)
    except ValueError as e:
        raise TaskArgError(f"--mem: {e}") from None
    if size > MAX_INT:  # msgpack cannot even encode 2^64; the agent refuses more than 2^63-1
        raise TaskArgError(f"--mem is too large ({value!r}; at most {MAX_INT} bytes)")
    return size


def parse_gpus(value: str | int) -> int:
    """A non-negative whole number of GPUs."""
    if isinstance(value, bool):
        raise TaskArgError(f"--gpus expects a whole number, got {value!r}")
    try:
        gpus = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise TaskArgError(f"--gpus expects a whole number such as 1, got {value!r}") from None
    if gpus < 0:
        raise TaskArgError(f"--gpus must not be negative, got {value!r}")
    if gpus > MAX_INT:
        raise TaskArgError(f"--gpus is too large ({value!r}; at most {MAX_INT})")
    return gpus


def parse_task_id(value: str, what: str = "task id") -> str:
    """A task id as given by the user: non-empty, no whitespace, at most MAX_ID_LEN characters."""
    if not value or not value.strip():
        raise TaskArgError(f"{what} must not be empty")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise TaskArgError(f"{what} must not contain spaces or control characters, got {value!r}")
    if len(value) > MAX_ID_LEN:
        raise TaskArgError(f"{what} is too long ({len(value)} characters; at most {MAX_ID_LEN})")
    return value


def new_task_id() -> str:
    """A fresh random id, e.g. ``t-3f9c0e5b1a2d4c6e`` (64 random bits)."""
    return "t-" + uuid.uuid4().hex[:16]


# ---------------------------------------------------------------- KEY=VALUE lists


def parse_pairs(values: Sequence[str] | None, flag: str, *, max_items: int = MAX_LABELS,
                max_value: int = MAX_ID_LEN) -> dict[str, str]:  # fmt: skip
    """``["k=v", ...]`` as a dict (a repeated key keeps its last value)."""
    out: dict[str, str] = {}
    for v in values or ():
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise TaskArgError(f"{flag} expects KEY=VALUE with a non-empty KEY, got {v!r}")
        key = key.strip()
        if len(key) > MAX_ID_LEN:
            raise TaskArgError(f"{flag} key is too long in {v[:40]!r}... (at most {MAX_ID_LEN})")
        if len(val) > max_value:
            raise TaskArgError(f"{flag} value of {key!r} is too long (at most {max_value})")
        out[key] = val
    if len(out) > max_items:
        raise TaskArgError(f"too many {flag} values ({len(out)}; at most {max_items})")
    return out


def parse_labels(values: Sequence[str] | None) -> dict[str, str]:
    """Required node labels: ``--label zone=eu`` (every one must match on the chosen node)."""
    return parse_pairs(values, "--label")


def parse_env(values: Sequence[str] | None) -> dict[str, str]:
    """Environment variables added to the task's environment: ``--env K=V``."""
    return parse_pairs(values, "--env", max_items=MAX_ENV, max_value=MAX_ENV_VALUE_LEN)


# ---------------------------------------------------------------- the command and the spec


def command_argv(rest: Sequence[str] | None) -> list[str]:
    """The command after ``--`` (argparse REMAINDER keeps the separator: drop it)."""
    argv = list(rest or ())
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or not argv[0].strip():
        raise TaskArgError(
            "no command given: put it after --, e.g. agora submit --cpus 1 -- python train.py"
        )
    if len(argv) > MAX_ARGV:
        raise TaskArgError(f"the command has too many arguments ({len(argv)}; at most {MAX_ARGV})")
    for a in argv:
        if len(a) > MAX_ARG_LEN:
            raise TaskArgError(f"a command argument is too long ({len(a)} characters; "
                               f"at most {MAX_ARG_LEN})")  # fmt: skip
    return argv


def build_spec(
    argv: Sequence[str] | None,
    *,
    cpus: str | float | None = None,
    mem: str | int | None = None,
    gpus: str | int | None = None,
    labels: Sequence[str] | None = None,
    env: Sequence[str] | None = None,
    cwd: str | None = None,
    deadline: str | float | None = None,
    timeout: str | float | None = None,
    expect: str | float | None = None,
) -> TaskSpec:
    """The TaskSpec for `agora submit` options given as strings (None = the default)."""
    if cwd is not None and len(cwd) > MAX_CWD_LEN:
        raise TaskArgError(f"--cwd is too long ({len(cwd)} characters; at most {MAX_CWD_LEN})")
    spec = TaskSpec(
        argv=tuple(command_argv(argv)),
        cpus=DEFAULT_CPUS if cpus is None else parse_cpus(cpus),
        memory=0 if mem is None else parse_memory(mem),
        gpus=0 if gpus is None else parse_gpus(gpus),
        labels=parse_labels(labels),
        env=parse_env(env),
        cwd=cwd or "",
        timeout=0.0 if timeout is None else parse_duration(timeout, "--timeout"),
        deadline=0.0 if deadline is None else parse_duration(deadline, "--deadline"),
        expected=DEFAULT_EXPECTED if expect is None else parse_expected(expect),
    )
    problem = spec_problem(spec)  # what the agent would refuse anyway
    if problem:
        raise TaskArgError(problem)
    return spec


def spec_args(spec: TaskSpec) -> dict[str, Any]:
    """The ``spec`` argument of the ``submit`` query (msgpack-friendly plain types)."""
    return {
        "argv": list(spec.argv), "cpus": float(spec.cpus), "memory": int(spec.memory),
        "gpus": int(spec.gpus), "labels": dict(spec.labels), "env": dict(spec.env),
        "cwd": spec.cwd, "timeout": float(spec.timeout), "deadline": float(spec.deadline),
        "expected": float(spec.expected),
    }  # fmt: skip


def parse_state(value: str) -> str:
    """A task state name, case-insensitive (for ``agora tasks --state``)."""
    s = value.strip().lower()
    if s not in TASK_STATES:
        raise TaskArgError(f"unknown task state {value!r} (choose from {', '.join(TASK_STATES)})")
    return s


def parse_limit(value: str) -> int:
    """How many tasks ``agora tasks --limit`` lists: a whole number in [1, MAX_LIST_RECORDS]."""
    try:
        n = int(value.strip())
    except ValueError:
        raise TaskArgError(f"expects a whole number of tasks, got {value!r}") from None
    if not 1 <= n <= MAX_LIST_RECORDS:
        raise TaskArgError(f"{value!r} is not from 1 to {MAX_LIST_RECORDS}")
    return n
