"""A scenario file (TOML) read into typed, validated parts: cluster, background, workload, faults.

Every key is documented in docs/scenarios.md with its default. Validation is strict and happens
before anything starts: an unknown key, a wrong type, a fault on a node that does not exist or a
time outside the run is one `ScenarioError` whose message names the file, the line and the key,
e.g. ``churn.toml:31: faults[2].at: 900 is after the end of the run (duration 600)``.

`tomllib` keeps no positions, so `_Locator` finds the line of a key path by reading the text:
table headers (``[a.b]``, ``[[faults]]`` counted per array) and ``key =`` lines under them.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.placement_config import PlacementConfig
from agent.resources import parse_size
from gossip.config import SwimConfig
from scenarios.policies import OMNISCIENT, POLICIES

MODES = ("sim", "local")
FAULT_ACTIONS = ("crash", "restart", "pause", "resume", "partition", "heal", "loss", "delay")
ARRIVALS = ("poisson", "daily")
MAX_NODES = 100_000

Path_ = tuple[str | int, ...]


class ScenarioError(Exception):
    """A scenario that cannot be run as written; the message is one line for a human."""


def keypath(path: Path_) -> str:
    out = ""
    for p in path:
        if not isinstance(p, int) and not re.fullmatch(r"[A-Za-z0-9_\-]+", p):
            p = json.dumps(p)  # quoted as TOML writes it, so the message stays one line
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top level)"


class _Locator:
    """Line numbers of key paths in a TOML text (1-based; 0 = unknown)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[Path_, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        current: Path_ = ()
        for no, line in enumerate(text.splitlines(), 1):
            m = self._HEADER.match(line)
            if m:
                names = tuple(p.strip().strip('"') for p in m.group(2).split("."))
                if m.group(1) == "[[":
                    k = counts.get(names, 0)
                    counts[names] = k + 1
                    current = (*self._resolve(names, counts), k)
                else:
                    current = self._resolve(names, counts)
                self.lines.setdefault(current, no)
                continue
            m = self._KEY.match(line)
            if m:
                self.lines.setdefault((*current, m.group(1).strip('"')), no)

    @staticmethod
    def _resolve(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> Path_:
        """A header under an array of tables refers to its latest element."""
        out: list[str | int] = []
        for i, n in enumerate(names):
            out.append(n)
            k = counts.get(names[: i + 1])
            if k is not None and i < len(names) - 1:
                out.append(k - 1)
        return tuple(out)

    def line(self, path: Path_) -> int:
        for end in range(len(path), -1, -1):
            no = self.lines.get(tuple(path[:end]))
            if no:
                return no
        return 0


class _Reader:
    """Typed access to the parsed TOML with errors that point at the file, line and key."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.loc = _Locator(text)

    def error(self, path: Path_, msg: str) -> ScenarioError:
        no = self.loc.line(path)
        where = f"{self.source}:{no}" if no else self.source
        return ScenarioError(f"{where}: {keypath(path)}: {msg}")

    def table(self, d: Any, path: Path_, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.error(path, f"expected a table, got {_kind(d)}")
        for k in d:
            if k not in known:
                raise self.error((*path, k), f"unknown key (known: {', '.join(known)})")
        return d

    def num(self, d: dict, path: Path_, key: str, default: float | None, *, lo: float = 0.0,
            hi: float = math.inf, lo_open: bool = False, integer: bool = False) -> Any:  # fmt: skip
        if key not in d:
            if default is None:
                raise self.error((*path, key), "is required")
            return default
        v = d[key]
        p = (*path, key)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(p, f"expected a number, got {_kind(v)}")
        if integer and not isinstance(v, int):
            raise self.error(p, f"expected a whole number, got {v!r}")
        if not math.isfinite(v):
            raise self.error(p, f"must be finite, got {v!r}")
        if v < lo or (lo_open and v == lo) or v > hi:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise self.error(p, f"{v!r} is outside {rng}")
        return v

    def str_(self, d: dict, path: Path_, key: str, default: str | None,
             choices: tuple[str, ...] | None = None) -> str:  # fmt: skip
        if key not in d:
            if default is None:
                raise self.error((*path, key), "is required")
            return default
        v = d[key]
        if not isinstance(v, str):
            raise self.error((*path, key), f"expected a string, got {_kind(v)}")
        if choices is not None and v not in choices:
            raise self.error((*path, key), f"{v!r} is not one of {', '.join(choices)}")
        return v

    def list_(self, d: dict, path: Path_, key: str, default: list | None,
              item: Callable[[Any, Path_], Any]) -> list:  # fmt: skip
        if key not in d:
            if default is None:
                raise self.error((*path, key), "is required")
            return list(default)
        v = d[key]
        if not isinstance(v, list):
            raise self.error((*path, key), f"expected a list, got {_kind(v)}")
        if not v:
            raise self.error((*path, key), "must not be empty")
        return [item(x, (*path, key, i)) for i, x in enumerate(v)]


def _kind(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)  # fmt: skip


# ---------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class NodeClass:
    """One kind of node and the share of the cluster that is of this kind."""

    cpus: float = 4.0
    memory: int = 8 << 30
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    share: float = 1.0


@dataclass(frozen=True)
class Cluster:
    nodes: int
    classes: tuple[NodeClass, ...]
    swim: dict[str, Any]  # the agent's own [swim] table (overrides of its defaults)
    placement: dict[str, Any]  # the agent's own [placement] table
    load_interval: float  # seconds between a node's load samples
    keys: bool = False  # local mode: a keyed cluster (CURVE), the runner with an admin credential


@dataclass(frozen=True)
class Background:
    traces: str  # "none", a shipped bundle name, a bundle file or a directory of traces
    step: float  # seconds of scenario time per trace sample (time scale: 300 = real time)
    warmup: int  # trace samples fed to each node's forecaster before t = 0 (sim mode)


@dataclass(frozen=True)
class Burst:
    at: float
    count: int


@dataclass(frozen=True)
class Workload:
    arrival: str  # poisson | daily
    rate: float | None  # tasks per second; exclusive with utilization
    utilization: float | None  # offered CPU load as a fraction of the cluster's free CPUs
    start: float  # first arrival not before this
    stop: float  # no arrivals after this (defaults to the run's duration)
    cpus: tuple[float, ...]  # drawn uniformly
    memory: tuple[int, ...]
    duration: tuple[float, float]  # expected run time, uniform in [min, max] seconds
    deadline_factor: float  # SLA deadline = factor x expected after submission; 0 = none
    daily_period: float
    daily_amplitude: float
    bursts: tuple[Burst, ...]
    csv: str  # a CSV of tasks instead of generated arrivals ("" = none)


@dataclass(frozen=True)
class Fault:
    """One entry of [[faults]], as written; `scenarios.faults` resolves targets and follow-ups."""

    index: int
    at: float
    action: str
    nodes: tuple[int, ...]  # named targets (indices)
    fraction: float  # or a seeded fraction of the nodes
    duration: float  # pause / partition / loss / delay: undone after this (0 = stays)
    groups: tuple[tuple[int, ...], ...]  # partition
    rate: float  # loss probability
    seconds: float  # added delay
    restart: float  # crash: fraction of the crashed nodes that restart...
    restart_after: tuple[float, float]  # ...after a delay uniform in this range


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str  # the file it came from
    text: str  # its text, copied into the results
    mode: str  # default mode
    duration: float  # seconds of arrivals and faults
    drain: float  # at most this long afterwards for accepted tasks to finish
    seeds: tuple[int, ...]
    policies: tuple[str, ...]
    sample_interval: float  # seconds between the runner's samples of the cluster
    cluster: Cluster
    background: Background
    workload: Workload
    faults: tuple[Fault, ...]

    def node_name(self, i: int) -> str:
        return f"n{i}"


# ---------------------------------------------------------------------- reading

_TOP = ("scenario", "cluster", "background", "workload", "faults")
_SCENARIO = ("name", "description", "mode", "duration", "drain", "seeds", "policies",
             "sample_interval")  # fmt: skip
_CLUSTER = ("nodes", "class", "swim", "placement", "load_interval", "keys")
_CLASS = ("cpus", "memory", "gpus", "labels", "share")
_BACKGROUND = ("traces", "step", "warmup")
_WORKLOAD = ("arrival", "rate", "utilization", "start", "stop", "cpus", "memory", "duration",
             "deadline_factor", "daily_period", "daily_amplitude", "burst", "csv")  # fmt: skip
_FAULT = ("at", "action", "nodes", "fraction", "duration", "groups", "rate", "seconds",
          "restart", "restart_after")  # fmt: skip


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ScenarioError (one line) on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{p}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, str(p))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"{source}:{m.group(1)}" if m else source
        raise ScenarioError(f"{where}: not valid TOML: {e}") from None
    r = _Reader(source, text)
    r.table(doc, (), _TOP)
    sc = r.table(doc.get("scenario", {}), ("scenario",), _SCENARIO)
    name = r.str_(sc, ("scenario",), "name", Path(source).stem)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        raise r.error(("scenario", "name"), "use 1-64 letters, digits, '_', '-' or '.'")
    duration = r.num(sc, ("scenario",), "duration", 60.0, lo=0, hi=30 * 86400.0, lo_open=True)
    seeds = tuple(r.list_(sc, ("scenario",), "seeds", [1], _seed(r)))
    if len(set(seeds)) != len(seeds):
        raise r.error(("scenario", "seeds"), "lists a seed twice")
    policies = tuple(r.list_(sc, ("scenario",), "policies", ["predictive"], _policy(r)))
    if len(set(policies)) != len(policies):
        raise r.error(("scenario", "policies"), "lists a policy twice")
    cluster = _cluster(r, doc.get("cluster", {}))
    workload = _workload(r, doc.get("workload", {}), duration)
    faults_doc = doc.get("faults", [])
    if not isinstance(faults_doc, list):
        raise r.error(("faults",), "expected [[faults]] entries (an array of tables)")
    faults = tuple(_fault(r, f, i, cluster.nodes, duration) for i, f in enumerate(faults_doc))
    return Scenario(
        name=name,
        description=r.str_(sc, ("scenario",), "description", ""),
        source=source,
        text=text,
        mode=r.str_(sc, ("scenario",), "mode", "sim", MODES),
        duration=float(duration),
        drain=float(r.num(sc, ("scenario",), "drain", max(60.0, duration), hi=30 * 86400.0)),
        seeds=seeds,
        policies=policies,
        sample_interval=float(r.num(sc, ("scenario",), "sample_interval",
                                    max(0.5, duration / 300), lo=0.01, hi=3600.0)),  # fmt: skip
        cluster=cluster,
        background=_background(r, doc.get("background", {})),
        workload=workload,
        faults=faults,
    )


def _seed(r: _Reader) -> Callable[[Any, Path_], int]:
    def item(v: Any, p: Path_) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise r.error(p, f"a seed is a whole number >= 0, got {v!r}")
        return v

    return item


def _policy(r: _Reader) -> Callable[[Any, Path_], str]:
    known = (*POLICIES, OMNISCIENT)

    def item(v: Any, p: Path_) -> str:
        if v not in known:
            raise r.error(p, f"unknown policy {v!r} (known: {', '.join(known)})")
        return v

    return item


def _cluster(r: _Reader, d: Any) -> Cluster:
    path: Path_ = ("cluster",)
    d = r.table(d, path, _CLUSTER)
    nodes = r.num(d, path, "nodes", None, lo=1, hi=MAX_NODES, integer=True)
    raw = d.get("class", [{}])
    if not isinstance(raw, list) or not raw:
        raise r.error((*path, "class"), "expected one or more [[cluster.class]] tables")
    classes = tuple(_node_class(r, c, (*path, "class", i)) for i, c in enumerate(raw))
    swim = r.table(d.get("swim", {}), (*path, "swim"), tuple(SwimConfig.__dataclass_fields__))
    placement = r.table(d.get("placement", {}), (*path, "placement"),
                        tuple(PlacementConfig.__dataclass_fields__))  # fmt: skip
    for table, cls, name in ((swim, SwimConfig, "swim"), (placement, PlacementConfig,
                                                          "placement")):  # fmt: skip
        try:
            cls.from_dict(table)
        except (ValueError, TypeError) as e:
            key = next((k for k in table if f".{k}" in str(e)), None)
            raise r.error((*path, name, *((key,) if key else ())), str(e)) from None
    if "policy" in placement:
        raise r.error((*path, "placement", "policy"),
                      "set policies in [scenario] policies, not here")  # fmt: skip
    keys = d.get("keys", False)
    if not isinstance(keys, bool):
        raise r.error((*path, "keys"), f"expected true or false, got {keys!r}")
    return Cluster(int(nodes), classes, dict(swim), dict(placement),
                   float(r.num(d, path, "load_interval", 1.0, lo=0.01, hi=3600.0)),
                   keys)  # fmt: skip


def _node_class(r: _Reader, d: Any, path: Path_) -> NodeClass:
    d = r.table(d, path, _CLASS)
    labels = d.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise r.error((*path, "labels"), "expected a table of string values")
    return NodeClass(
        cpus=float(r.num(d, path, "cpus", 4.0, lo=0, hi=4096, lo_open=True)),
        memory=_size(r, d, path, "memory", 8 << 30),
        gpus=int(r.num(d, path, "gpus", 0, hi=1024, integer=True)),
        labels=dict(labels),
        share=float(r.num(d, path, "share", 1.0, lo=0, hi=1e9, lo_open=True)),
    )


def _size(r: _Reader, d: dict, path: Path_, key: str, default: int) -> int:
    if key not in d:
        return default
    try:
        v = parse_size(d[key])
    except ValueError as e:
        raise r.error((*path, key), str(e)) from None
    if v >= 1 << 60:
        raise r.error((*path, key), f"{v} bytes is too large")
    return v


def _background(r: _Reader, d: Any) -> Background:
    path: Path_ = ("background",)
    d = r.table(d, path, _BACKGROUND)
    return Background(
        traces=r.str_(d, path, "traces", "gcd-vms"),
        step=float(r.num(d, path, "step", 30.0, lo=0, hi=86400.0, lo_open=True)),
        warmup=int(r.num(d, path, "warmup", 48, hi=10_000, integer=True)),
    )


def _workload(r: _Reader, d: Any, duration: float) -> Workload:
    path: Path_ = ("workload",)
    d = r.table(d, path, _WORKLOAD)
    rate = r.num(d, path, "rate", -1.0, hi=1e6) if "rate" in d else None
    util = r.num(d, path, "utilization", -1.0, hi=10.0) if "utilization" in d else None
    csv = r.str_(d, path, "csv", "")
    given = [k for k in ("rate", "utilization", "csv") if k in d]
    if len(given) > 1:
        raise r.error((*path, given[1]), f"give only one of rate, utilization, csv ({given[0]} "
                      "is set too)")  # fmt: skip
    if not given and not d.get("burst"):
        raise r.error(path, "needs rate, utilization, csv or [[workload.burst]]")
    start = float(r.num(d, path, "start", min(5.0, duration / 10), hi=duration))
    stop = float(r.num(d, path, "stop", duration, hi=duration))
    if stop < start:
        raise r.error((*path, "stop"), f"{stop:g} is before start ({start:g})")
    dur = d.get("duration", {"min": 1.0, "max": 10.0})
    dpath = (*path, "duration")
    dur = r.table(dur, dpath, ("min", "max"))
    lo = float(r.num(dur, dpath, "min", 1.0, hi=30 * 86400.0))
    hi = float(r.num(dur, dpath, "max", max(lo, 10.0), hi=30 * 86400.0))
    if hi < lo:
        raise r.error((*dpath, "max"), f"{hi:g} is below min ({lo:g})")

    def cpus_item(v: Any, p: Path_) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 4096:
            raise r.error(p, f"a task's cpus is a number in (0, 4096], got {v!r}")
        return float(v)

    def mem_item(v: Any, p: Path_) -> int:
        try:
            return parse_size(v)
        except ValueError as e:
            raise r.error(p, str(e)) from None

    bursts = []
    raw = d.get("burst", [])
    if not isinstance(raw, list):
        raise r.error((*path, "burst"), "expected [[workload.burst]] tables")
    for i, b in enumerate(raw):
        bp = (*path, "burst", i)
        b = r.table(b, bp, ("at", "count"))
        bursts.append(Burst(float(r.num(b, bp, "at", None, hi=duration)),
                            int(r.num(b, bp, "count", None, lo=1, hi=1e6, integer=True))))
    return Workload(
        arrival=r.str_(d, path, "arrival", "poisson", ARRIVALS),
        rate=None if rate is None else float(rate),
        utilization=None if util is None else float(util),
        start=start,
        stop=stop,
        cpus=tuple(r.list_(d, path, "cpus", [1.0], cpus_item)),
        memory=tuple(r.list_(d, path, "memory", [0], mem_item)),
        duration=(lo, hi),
        deadline_factor=float(r.num(d, path, "deadline_factor", 2.0, hi=1e6)),
        daily_period=float(r.num(d, path, "daily_period", 86400.0, lo=0, hi=1e9, lo_open=True)),
        daily_amplitude=float(r.num(d, path, "daily_amplitude", 0.5, hi=1.0)),
        bursts=tuple(bursts),
        csv=csv,
    )


def _fault(r: _Reader, d: Any, i: int, n: int, duration: float) -> Fault:
    path: Path_ = ("faults", i)
    d = r.table(d, path, _FAULT)
    action = r.str_(d, path, "action", None, FAULT_ACTIONS)
    at = d.get("at")
    if isinstance(at, int | float) and not isinstance(at, bool) and at > duration:
        raise r.error((*path, "at"), f"{at:g} is after the end of the run (duration "
                      f"{duration:g})")  # fmt: skip
    at = float(r.num(d, path, "at", None, hi=duration))

    def node(v: Any, p: Path_) -> int:
        if not isinstance(v, str) or not re.fullmatch(r"n\d+", v) or int(v[1:]) >= n:
            raise r.error(p, f"no node {v!r} (nodes are n0..n{n - 1})")
        return int(v[1:])

    nodes = tuple(r.list_(d, path, "nodes", [], node)) if "nodes" in d else ()
    fraction = float(r.num(d, path, "fraction", 0.0, hi=1.0))
    targeted = action in ("crash", "restart", "pause", "resume", "loss", "delay")
    if targeted and action != "loss" and action != "delay" and not nodes and not fraction:
        raise r.error(path, f"{action} needs nodes = [...] or fraction = ...")
    if nodes and fraction:
        raise r.error((*path, "fraction"), "give nodes or fraction, not both")
    if not targeted and (nodes or fraction) and action != "partition":
        raise r.error((*path, "nodes" if nodes else "fraction"), f"{action} takes no targets")
    groups: tuple[tuple[int, ...], ...] = ()
    if action == "partition":
        if "groups" in d:

            def group(g: Any, p: Path_) -> tuple[int, ...]:
                if not isinstance(g, list) or not g:
                    raise r.error(p, "a group is a non-empty list of node names")
                return tuple(node(x, (*p, j)) for j, x in enumerate(g))

            groups = tuple(r.list_(d, path, "groups", None, group))
            seen = [x for g in groups for x in g]
            if len(seen) != len(set(seen)):
                raise r.error((*path, "groups"), "a node is in two groups")
            if nodes or fraction:
                raise r.error((*path, "groups"), "give groups or nodes/fraction, not both")
        elif not nodes and not fraction:
            raise r.error(path, "partition needs groups = [[...], ...], nodes or fraction")
    for key, allowed in (("groups", ("partition",)), ("rate", ("loss",)),
                         ("seconds", ("delay",)), ("restart", ("crash",)),
                         ("restart_after", ("crash",)),
                         ("duration", ("pause", "partition", "loss", "delay"))):  # fmt: skip
        if key in d and action not in allowed:
            raise r.error((*path, key), f"only for {', '.join(allowed)} faults, not {action}")
    if action == "loss" and "rate" not in d:
        raise r.error(path, "loss needs rate = <probability 0..1>")
    if action == "delay" and "seconds" not in d:
        raise r.error(path, "delay needs seconds = <added one-way delay>")
    ra = d.get("restart_after", [0.5, 0.5])
    if (not isinstance(ra, list) or len(ra) != 2 or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 86400
            for x in ra) or ra[1] < ra[0]):  # fmt: skip
        raise r.error((*path, "restart_after"), "expected [min, max] seconds, 0 <= min <= max")
    return Fault(
        index=i, at=at, action=action, nodes=nodes, fraction=fraction,
        duration=float(r.num(d, path, "duration", 0.0, hi=duration)),
        groups=groups,
        rate=float(r.num(d, path, "rate", 0.0, hi=1.0)),
        seconds=float(r.num(d, path, "seconds", 0.0, hi=60.0)),
        restart=float(r.num(d, path, "restart", 0.0, hi=1.0)),
        restart_after=(float(ra[0]), float(ra[1])),
    )
