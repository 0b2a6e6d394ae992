"""This machine's resources (capacity) and its observed load, read with psutil.

Capacity is what the agent offers (CPUs, memory, GPUs, labels); every field can be overridden
by configuration, e.g. to offer only part of a machine. Load is sampled periodically by the
agent and gossiped: CPU utilisation and memory utilisation, both as fractions 0..1.

Load is measured with psutil (`LoadSampler`) or, when many agents share one small machine and
none of them can see a real machine's load, replayed from a recorded trace
(`ReplayLoadSampler`): then each agent behaves as if it ran on the machine the trace came from.
"""

from __future__ import annotations

import glob
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psutil

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as "4GiB", "512 MiB", "2G" (decimal) or "1024".

    Raises ValueError with a short reason on anything else (negative, unknown unit, bool...).
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4GiB or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 4GiB or a number of bytes")
    m = _SIZE_RE.match(value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (examples: 4GiB, 512MiB, 2GB, 1048576)")
    number, unit = m.group(1), _SIZE_UNITS[m.group(2).lower()]
    if number.isdigit():  # exact: a float rounds 2**63 - 1 bytes up to 2**63
        return int(number) * unit
    return int(float(number) * unit)


def format_size(n: int) -> str:
    """A short human form, e.g. 4.0GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Capacity:
    """What this node offers to the cluster."""

    cpus: float
    memory: int  # bytes
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapacityOverrides:
    """Configured values that replace the detected ones (None = detect)."""

    cpus: float | None = None
    memory: int | None = None
    gpus: int | None = None
    labels: dict[str, str] = field(default_factory=dict)


def detect_gpus() -> int:
    """NVIDIA GPUs visible through /dev/nvidiaN (0 when there are none or no driver)."""
    return len([p for p in glob.glob("/dev/nvidia[0-9]*") if p[len("/dev/nvidia") :].isdigit()])


def detect_capacity(overrides: CapacityOverrides | None = None) -> Capacity:
    o = overrides or CapacityOverrides()
    return Capacity(
        cpus=float(o.cpus) if o.cpus is not None else float(psutil.cpu_count(logical=True) or 1),
        memory=int(o.memory) if o.memory is not None else int(psutil.virtual_memory().total),
        gpus=int(o.gpus) if o.gpus is not None else detect_gpus(),
        labels=dict(o.labels),
    )


@dataclass(frozen=True, slots=True)
class LoadSample:
    load: float  # CPU utilisation of the whole machine, 0..1
    mem_load: float  # memory utilisation, 0..1


class LoadSource(Protocol):
    """Anything the agent can take load samples from (psutil, a replayed trace, a test)."""

    def sample(self) -> LoadSample: ...


class LoadSampler:
    """Samples machine load. CPU utilisation is measured between consecutive calls."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking reading is meaningless

    def sample(self) -> LoadSample:
        cpu = psutil.cpu_percent(interval=None) / 100.0
        mem = psutil.virtual_memory().percent / 100.0
        return LoadSample(load=min(max(cpu, 0.0), 1.0), mem_load=min(max(mem, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class ReplayTrace:
    """A configured replay (the ``[replay]`` table): CPU % values and how they meet the clock."""

    values: tuple[float, ...]  # CPU %, one per step, as in a gcd-vms file's first column
    step: float = 300.0  # seconds per sample
    offset: float = 0.0  # seconds into the trace at `epoch`
    epoch: float = 0.0  # unix time of the replay's t=0; 0 = when the agent starts
    source: str = ""  # the trace file, for messages


class ReplayLoadSampler:
    """Load = a recorded machine's CPU (background) + the CPUs this agent's own tasks reserve.

    The background is piecewise constant and loops: sample k of the trace holds while
    ``k*step <= time() - epoch + offset < (k+1)*step`` (modulo the trace length), as the
    simulator's `BackgroundTrace` lays a trace on virtual time. The running tasks' share
    (`running_cpus()` / `capacity_cpus`) is added because the replay cannot see them, and a
    real machine would. Memory load is not replayed (0).
    """

    def __init__(
        self, values: Sequence[float], step: float, offset: float, epoch: float,
        capacity_cpus: float, running_cpus: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        vals = [float(v) for v in values]
        if not vals or not all(math.isfinite(v) for v in vals):
            raise ValueError("a replayed trace needs at least one value and only finite ones")
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a finite number > 0, got {step}")
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset}")
        if not (math.isfinite(epoch) and epoch >= 0):
            raise ValueError(f"epoch must be a unix time >= 0 (0 = now), got {epoch}")
        if not (math.isfinite(capacity_cpus) and capacity_cpus > 0):
            raise ValueError(f"capacity_cpus must be > 0, got {capacity_cpus}")
        self._fractions = [min(1.0, max(0.0, v / 100.0)) for v in vals]
        self.step = float(step)
        self.offset = float(offset)
        self._clock = clock
        self.epoch = float(epoch) if epoch > 0 else clock()
        self.capacity_cpus = float(capacity_cpus)
        self._running_cpus = running_cpus

    @classmethod
    def from_trace(
        cls, trace: ReplayTrace, capacity_cpus: float, running_cpus: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> ReplayLoadSampler:  # fmt: skip
        return cls(trace.values, trace.step, trace.offset, trace.epoch, capacity_cpus,
                   running_cpus, clock)  # fmt: skip

    def background(self, now: float | None = None) -> float:
        """The trace's load fraction (0..1) at unix time `now` (default: the clock)."""
        t = (self._clock() if now is None else now) - self.epoch + self.offset
        return self._fractions[math.floor(t / self.step) % len(self._fractions)]

    def sample(self) -> LoadSample:
        tasks = max(0.0, float(self._running_cpus())) / self.capacity_cpus
        return LoadSample(load=min(1.0, self.background() + tasks), mem_load=0.0)
