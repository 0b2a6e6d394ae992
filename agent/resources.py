"""This machine's resources (capacity) and its observed load, read with psutil.

Capacity is what the agent offers (CPUs, memory, GPUs, labels); every field can be overridden
by configuration, e.g. to offer only part of a machine. Load is sampled periodically by the
agent and gossiped: CPU utilisation and memory utilisation, both as fractions 0..1.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field

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
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


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


class LoadSampler:
    """Samples machine load. CPU utilisation is measured between consecutive calls."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking reading is meaningless

    def sample(self) -> LoadSample:
        cpu = psutil.cpu_percent(interval=None) / 100.0
        mem = psutil.virtual_memory().percent / 100.0
        return LoadSample(load=min(max(cpu, 0.0), 1.0), mem_load=min(max(mem, 0.0), 1.0))
