"""Turn a scenario results folder into report.md + PNG plots, and compare several folders.

The runner writes six files into a results folder: run.json, metrics.json, tasks.csv,
events.csv, timeseries.csv and nodeload.csv (format in the module constants below), and in local
mode a seventh, rss.csv: every agent process's resident memory over time (its own section and
plot; a folder without it has neither). The report
is meant to be looked at, not read: a headline table per policy, checker verdicts, the faults
that were injected, and four plots with the faults marked on the time axis.

CSVs are streamed with the csv module (they can be large; pandas is not a dependency). Only the
cells the report uses are parsed, and a cell that should be a number but is not raises
`ReportError` naming the file, line and column. Empty cells (and "nan"/"none"/"null") mean
"no value". Plots are drawn on bare `matplotlib.figure.Figure`s (Agg, no pyplot state), so this
module is safe to call from a CLI, a test or a thread.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.metrics import agent_memory
from scenarios.observation import RssSample

__all__ = ["ReportError", "compare", "headline_table", "write_report"]

OMNISCIENT = "omniscient"
OMNISCIENT_LABEL = "omniscient (ideal baseline, sim only)"

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
TASKS_FILE = "tasks.csv"
EVENTS_FILE = "events.csv"
TIMESERIES_FILE = "timeseries.csv"
NODELOAD_FILE = "nodeload.csv"
REPORT_FILE = "report.md"

TASKS_COLUMNS = (
    "policy", "seed", "task", "submitted", "accepted", "state", "node", "attempt", "placed",
    "started", "finished", "cpus", "expected", "deadline", "completion", "slowdown",
    "deadline_met",
)
EVENTS_COLUMNS = ("policy", "seed", "t", "kind", "node", "subject", "detail")
TIMESERIES_COLUMNS = (
    "policy", "seed", "t", "live_members", "in_flight", "task_utilization", "total_utilization",
)
NODELOAD_COLUMNS = ("policy", "seed", "t", "node", "load")
RSS_FILE = "rss.csv"
RSS_COLUMNS = ("policy", "seed", "t", "node", "pid", "rss")
MiB = float(1 << 20)
CHECKERS = ("lost", "duplicate_results", "unmatched_results", "overcommit", "stuck")

PLOT_SIZE = (12.0, 6.0)  # inches; at PLOT_DPI this is 1200 x 600 px
PLOT_DPI = 100
CDF_MAX_POINTS = 4000  # an ECDF of a million tasks looks the same drawn through 4000 quantiles
HEATMAP_MAX_ROWS = 200  # more nodes than this are averaged into bands of adjacent nodes
HEATMAP_MAX_COLS = 600
HEATMAP_MAX_PANELS = 4
MAX_FAULT_LABELS = 16  # beyond this the labels overlap; the legend still names the kinds
MAX_TIMELINE_ROWS = 100
MAX_PROBLEMS_SHOWN = 5
PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
MISSING = "–"
FIDELITY_METRICS = (
    ("detection_time_mean", "detection time mean"),
    ("mean_completion", "mean completion"),
    ("p50_completion", "p50 completion"),
    ("p99_completion", "p99 completion"),
)


class ReportError(Exception):
    """A results file is missing or malformed; the message names the file (and line/key)."""


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    kind: str  # count | pct | s | ratio | rate | auto


METRICS: tuple[Metric, ...] = (
    Metric("tasks", "tasks", "count"),
    Metric("accepted", "accepted", "count"),
    Metric("completed", "completed", "count"),
    Metric("completion_rate", "completion rate [%]", "pct"),
    Metric("lost", "lost", "count"),
    Metric("duplicates", "duplicate results", "count"),
    Metric("mean_completion", "mean completion time [s]", "s"),
    Metric("p50_completion", "p50 completion time [s]", "s"),
    Metric("p99_completion", "p99 completion time [s]", "s"),
    Metric("mean_slowdown", "mean slowdown [×]", "ratio"),
    Metric("deadline_misses", "deadline misses [%]", "pct"),
    Metric("mean_utilization", "mean utilization [%]", "pct"),
    Metric("utilization_spread", "utilization spread, std across nodes [pp]", "pct"),
    Metric("p50_submit_to_placed", "p50 submit → placed [s]", "s"),
    Metric("p99_submit_to_placed", "p99 submit → placed [s]", "s"),
    Metric("messages_per_node_s", "messages per node per second", "rate"),
    Metric("detection_time_mean", "failure detection time, mean [s]", "s"),
    Metric("detection_time_max", "failure detection time, max [s]", "s"),
    Metric("recovery_time_mean", "recovery time, mean [s]", "s"),
    Metric("recovery_time_max", "recovery time, max [s]", "s"),
    Metric("false_failures", "false failure detections", "count"),
)
# Counts scenarios/metrics.py adds beyond the list above: shown after it, only when present.
EXTRA_METRICS: tuple[Metric, ...] = (
    Metric("false_failures_by_disturbed", "false failures by disturbed observers", "count"),
    Metric("false_failures_in_loss", "false failures while loss was on the link", "count"),
    Metric("false_failures_after_loss", "false failures after the loss ended", "count"),
    Metric("remerge_time_mean", "heal → all live nodes see each other alive, mean [s]", "s"),
    Metric("remerge_time_max", "heal → all live nodes see each other alive, max [s]", "s"),
    Metric("heals_unmerged", "heals not followed by a full re-merge", "count"),
    Metric("heal_flaps", "declarations after a heal about nodes that stayed reachable", "count"),
    Metric("crashes_detected", "crashes detected", "count"),
    Metric("crashes_undetected", "crashes undetected", "count"),
    Metric("tasks_recovered", "tasks recovered after a crash", "count"),
    Metric("tasks_unrecovered", "tasks not recovered after a crash", "count"),
    Metric("runs", "task runs started", "count"),
    Metric("rss_start_max", "agent resident memory at start, largest [MiB]", "mib"),
    Metric("rss_end_max", "agent resident memory at end, largest [MiB]", "mib"),
    Metric("rss_growth_max", "agent resident memory growth, largest [MiB]", "mib"),
)
_KNOWN_METRICS = {m.key for m in METRICS}


# ----------------------------------------------------------------------------- loading


@dataclass
class Run:
    """run.json + metrics.json of one results folder."""

    folder: Path
    info: dict[str, Any]
    policies: list[str]
    metrics: dict[str, dict[str, float | None]]
    checks: dict[str, dict[str, list[str]]]

    @property
    def scenario(self) -> str:
        return str(self.info["scenario"])

    @property
    def mode(self) -> str:
        return str(self.info["mode"])

    @property
    def seeds(self) -> list[int]:
        return list(self.info["seeds"])

    @property
    def complete(self) -> bool:
        return bool(self.info["complete"])

    def metric_keys(self) -> list[str]:
        """Known metrics in table order, then any extra key the runner added (never hidden)."""
        present = {k for m in self.metrics.values() for k in m} - _KNOWN_METRICS
        extra = [m.key for m in EXTRA_METRICS if m.key in present]
        return [m.key for m in METRICS] + extra + sorted(present - set(extra))


@dataclass
class Fault:
    t: float
    subject: str
    node: str
    detail: str
    policy: str
    seed: int

    @property
    def label(self) -> str:
        return " ".join(x for x in (self.subject, self.node or self.detail) if x)


@dataclass
class Series:
    t: np.ndarray
    live: np.ndarray
    in_flight: np.ndarray
    task_util: np.ndarray
    total_util: np.ndarray


@dataclass
class Completions:
    values: np.ndarray  # finite completion times, all seeds pooled
    accepted: int  # rows with accepted == 1 (the CDF's denominator)


@dataclass
class HeatPanel:
    policy: str
    nodes: list[str]  # natural order, one per matrix row
    t: np.ndarray  # sample times, one per matrix column
    load: np.ndarray  # nodes x times, NaN = no sample


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path.name}: missing (expected in {path.parent})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path.name}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def load_run(folder: str | Path) -> Run:
    """Read and validate run.json and metrics.json, so later code can trust their shapes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a results folder")
    info = _read_json(folder / RUN_FILE)
    required = {"scenario": str, "mode": str, "seeds": list, "policies": list, "complete": bool}
    for key, typ in required.items():
        if key not in info:
            raise ReportError(f"{RUN_FILE}: missing key {key!r}")
        if not isinstance(info[key], typ):
            raise ReportError(f"{RUN_FILE}: key {key!r} should be {typ.__name__}")
    if not all(_is_number(s) and float(s).is_integer() for s in info["seeds"]):
        raise ReportError(f"{RUN_FILE}: key 'seeds' should be a list of integers")
    info["seeds"] = [int(s) for s in info["seeds"]]
    if not all(isinstance(p, str) for p in info["policies"]):
        raise ReportError(f"{RUN_FILE}: key 'policies' should be a list of strings")
    mech = info.get("fault_mechanisms", {})
    if not isinstance(mech, dict):
        raise ReportError(f"{RUN_FILE}: key 'fault_mechanisms' should be an object")

    raw = _read_json(folder / METRICS_FILE)
    pols = raw.get("policies")
    if not isinstance(pols, dict):
        raise ReportError(f"{METRICS_FILE}: missing key 'policies' (an object per policy)")
    metrics: dict[str, dict[str, float | None]] = {}
    for policy, values in pols.items():
        if not isinstance(values, dict):
            raise ReportError(f"{METRICS_FILE}: policies.{policy} should be an object")
        row: dict[str, float | None] = {}
        for key, v in values.items():
            if v is not None and not _is_number(v):
                raise ReportError(f"{METRICS_FILE}: policies.{policy}.{key} is not a number: {v!r}")
            row[key] = None if v is None or not math.isfinite(v) else float(v)
        metrics[policy] = row
    raw_checks = raw.get("checks", {})
    if not isinstance(raw_checks, dict):
        raise ReportError(f"{METRICS_FILE}: key 'checks' should be an object")
    checks: dict[str, dict[str, list[str]]] = {}
    for policy, per in raw_checks.items():
        if not isinstance(per, dict):
            raise ReportError(f"{METRICS_FILE}: checks.{policy} should be an object")
        for checker, problems in per.items():
            if not isinstance(problems, list):
                raise ReportError(f"{METRICS_FILE}: checks.{policy}.{checker} should be a list")
        checks[policy] = {c: [str(p) for p in probs] for c, probs in per.items()}

    order = list(info["policies"])
    order += [p for p in (*metrics, *checks) if p not in order]
    return Run(folder, info, list(dict.fromkeys(order)), metrics, checks)


class _Table:
    """An open CSV whose header has been checked: column indexes plus the row reader."""

    def __init__(self, name: str, reader: Any, header: list[str], columns: Sequence[str]):
        self.name = name
        self.reader = reader
        self.header = header
        self.index = {c: header.index(c) for c in columns}
        self.width = max(self.index.values()) + 1

    def short_row(self, row: list[str]) -> ReportError:
        return ReportError(
            f"{self.name} line {self.reader.line_num}: {len(row)} cell(s), "
            f"header has {len(self.header)}"
        )

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line number, cells) for every non-blank row, each wide enough to index."""
        reader, width = self.reader, self.width
        for row in reader:
            if len(row) < width:
                if not row:
                    continue
                raise self.short_row(row)
            yield reader.line_num, row


@contextmanager
def _csv_table(path: Path, columns: Sequence[str]) -> Iterator[_Table]:
    """Open a CSV and check its header has `columns`; csv/decoding errors become ReportError."""
    name = path.name
    if not path.is_file():
        raise ReportError(f"{name}: missing (expected in {path.parent})")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ReportError(f"{name}: empty file (expected header {','.join(columns)})") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise ReportError(f"{name} line 1: unreadable header ({e})") from None
        if header:
            header[0] = header[0].lstrip("\ufeff")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ReportError(
                f"{name}: bad header, missing column(s) {', '.join(missing)} "
                f"(got {','.join(header)[:120]!r})"
            )
        try:
            yield _Table(name, reader, header, columns)
        except (csv.Error, UnicodeDecodeError) as e:
            raise ReportError(f"{name} line {reader.line_num}: {e}") from None


_NA = frozenset({"", "nan", "none", "null", "na", "n/a"})


def _num(cell: str) -> float:
    """A float from a cell; the blank/"none" spellings mean NaN, anything else raises."""
    try:
        return float(cell)
    except ValueError:
        if cell.strip().lower() in _NA:
            return math.nan
        raise


def _bad_cell(name: str, line: int, column: str, value: str) -> ReportError:
    return ReportError(f"{name} line {line}, column {column!r}: not a number: {value!r}")


class _Seeds:
    """Parses seed cells once per distinct spelling (they repeat on every row)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cache: dict[str, int] = {}

    def __call__(self, cell: str, line: int) -> int:
        seed = self.cache.get(cell)
        if seed is None:
            try:
                v = float(cell)
            except ValueError:
                raise _bad_cell(self.name, line, "seed", cell) from None
            if not v.is_integer():
                raise ReportError(
                    f"{self.name} line {line}, column 'seed': not an integer: {cell!r}"
                )
            seed = self.cache[cell] = int(v)
        return seed


def read_completions(path: Path) -> dict[str, Completions]:
    """Completion times per policy (seeds pooled) and how many tasks were accepted."""
    values: dict[str, list[float]] = defaultdict(list)
    accepted: Counter[str] = Counter()
    seeds = _Seeds(path.name)
    with _csv_table(path, TASKS_COLUMNS) as table:
        ix, rows = table.index, table.rows()
        pi, si, ai, ci = ix["policy"], ix["seed"], ix["accepted"], ix["completion"]
        for line, row in rows:
            seeds(row[si], line)
            policy = row[pi]
            try:
                acc = _num(row[ai])
            except ValueError:
                raise _bad_cell(path.name, line, "accepted", row[ai]) from None
            try:
                c = _num(row[ci])
            except ValueError:
                raise _bad_cell(path.name, line, "completion", row[ci]) from None
            if acc == 1:
                accepted[policy] += 1
            if math.isfinite(c):
                values[policy].append(c)
            elif policy not in values:
                values[policy] = []
    out = {}
    for policy, vals in values.items():
        arr = np.sort(np.asarray(vals, dtype=float))
        out[policy] = Completions(arr, max(accepted[policy], arr.size))
    return out


def read_events(path: Path) -> tuple[list[Fault], Counter[str]]:
    """The fault events (for timelines and plot marks) and a count of rows per kind."""
    faults: list[Fault] = []
    kinds: Counter[str] = Counter()
    seeds = _Seeds(path.name)
    with _csv_table(path, EVENTS_COLUMNS) as table:
        ix, rows = table.index, table.rows()
        pi, si, ti, ki = ix["policy"], ix["seed"], ix["t"], ix["kind"]
        ni, sui, di = ix["node"], ix["subject"], ix["detail"]
        for line, row in rows:
            kind = row[ki].strip()
            kinds[kind] += 1
            if kind != "fault":
                continue
            seed = seeds(row[si], line)
            try:
                t = _num(row[ti])
            except ValueError:
                raise _bad_cell(path.name, line, "t", row[ti]) from None
            if not math.isfinite(t):
                raise ReportError(f"{path.name} line {line}, column 't': a fault needs a time")
            faults.append(
                Fault(t, row[sui].strip(), row[ni].strip(), row[di].strip(), row[pi], seed)
            )
    faults.sort(key=lambda f: f.t)
    return faults, kinds


def read_timeseries(path: Path) -> dict[tuple[str, int], Series]:
    """Cluster-level samples per (policy, seed), sorted by time."""
    cols = ("t", "live_members", "in_flight", "task_utilization", "total_utilization")
    acc: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    seeds = _Seeds(path.name)
    with _csv_table(path, TIMESERIES_COLUMNS) as table:
        ix, rows = table.index, table.rows()
        idx = [(c, ix[c]) for c in cols]
        pi, si = ix["policy"], ix["seed"]
        for line, row in rows:
            vals = []
            for c, i in idx:
                try:
                    vals.append(_num(row[i]))
                except ValueError:
                    raise _bad_cell(path.name, line, c, row[i]) from None
            acc[(row[pi], seeds(row[si], line))].append(vals)
    out = {}
    for key, vals in acc.items():
        a = np.asarray(vals, dtype=float)
        a = a[np.argsort(a[:, 0], kind="stable")]
        out[key] = Series(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4])
    return out


def read_rss(path: Path) -> dict[tuple[str, int], list[RssSample]]:
    """Resident-memory samples per (policy, seed); empty when the run wrote none."""
    out: dict[tuple[str, int], list[RssSample]] = defaultdict(list)
    if not path.is_file():
        return out
    seeds = _Seeds(path.name)
    with _csv_table(path, RSS_COLUMNS) as table:
        ix = table.index
        for line, row in table.rows():
            vals = {}
            for c in ("t", "pid", "rss"):
                try:
                    vals[c] = _num(row[ix[c]])
                except ValueError:
                    raise _bad_cell(path.name, line, c, row[ix[c]]) from None
            if not all(math.isfinite(v) for v in vals.values()):
                raise ReportError(f"{path.name} line {line}: t, pid and rss must all be given")
            out[(row[ix["policy"]], seeds(row[ix["seed"]], line))].append(RssSample(
                vals["t"], row[ix["node"]].strip(), int(vals["pid"]), int(vals["rss"])))
    return out


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """n2 before n10: node names sort by their numeric parts."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


def read_nodeload(path: Path, policies: Sequence[str], seed: int) -> dict[str, HeatPanel]:
    """Per-node load matrices for `policies` at `seed`; other rows are skipped unparsed.

    5,000 nodes x 600 samples is three million rows, so the loop reads the csv reader directly
    and does a few dict look-ups and one float() per row; each distinct node name or time
    string is handled once.
    """
    name = path.name
    wanted = set(policies)
    seeds = _Seeds(name)
    # per policy: node name -> id, time string -> id, and per row: cell id, load
    Acc = tuple[dict[str, int], dict[str, int], list[int], list[float]]
    state: dict[str, Acc] = {}
    times: dict[str, dict[str, float]] = {}
    keep: dict[tuple[str, str], Acc | None] = {}
    stride = 1 << 24  # cell id = node id * stride + time id
    with _csv_table(path, NODELOAD_COLUMNS) as table:
        reader = table.reader
        pi, si, ti, ni, li = (table.index[c] for c in NODELOAD_COLUMNS)
        last: tuple[str, str] | None = None
        acc: Acc | None = None
        for row in reader:
            try:
                p, sd, nodename, ts, cell = row[pi], row[si], row[ni], row[ti], row[li]
            except IndexError:
                if not row:
                    continue
                raise table.short_row(row) from None
            if last is None or p != last[0] or sd != last[1]:  # a run's rows are contiguous
                last = (p, sd)
                acc = keep.get(last, False)  # type: ignore[arg-type]
                if acc is False:
                    ok = p in wanted and seeds(sd, reader.line_num) == seed
                    acc = keep[last] = state.setdefault(p, ({}, {}, [], [])) if ok else None
                    times.setdefault(p, {})
            if acc is None:
                continue
            node_ids, t_ids, cells, loads = acc
            n = node_ids.get(nodename)
            if n is None:
                n = node_ids[nodename] = len(node_ids)
            t = t_ids.get(ts)
            if t is None:
                try:
                    times[p][ts] = _num(ts)
                except ValueError:
                    raise _bad_cell(name, reader.line_num, "t", ts) from None
                t = t_ids[ts] = len(t_ids)
            try:
                v = float(cell)
            except ValueError:
                try:
                    v = _num(cell)
                except ValueError:
                    raise _bad_cell(name, reader.line_num, "load", cell) from None
            cells.append(n * stride + t)
            loads.append(v)
    out = {}
    for policy, (node_ids, t_ids, cells, loads) in state.items():
        names = sorted(node_ids, key=_natural_key)
        rank = np.empty(len(names), dtype=np.int64)
        rank[[node_ids[n] for n in names]] = np.arange(len(names))
        tvals = np.array([times[policy][s] for s in t_ids], dtype=float)  # by time id
        good = np.isfinite(tvals)
        uniq, inv = np.unique(tvals[good], return_inverse=True)
        col = np.full(len(tvals), -1, dtype=np.int64)
        col[good] = inv
        ids = np.asarray(cells, dtype=np.int64)
        r = rank[ids // stride]
        c = col[ids % stride]
        m = c >= 0
        load = np.full((len(names), len(uniq)), np.nan, dtype=np.float32)
        load[r[m], c[m]] = np.asarray(loads, dtype=np.float32)[m]
        out[policy] = HeatPanel(policy, names, uniq, load)
    return out


# ----------------------------------------------------------------------------- formatting


def policy_label(policy: str) -> str:
    return OMNISCIENT_LABEL if policy == OMNISCIENT else policy


def _md(text: Any) -> str:
    """Make text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt_num(v: float) -> str:
    """About three significant digits, never scientific notation for everyday magnitudes."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.001:
        return f"{v:#.3g}"
    return f"{v:.1e}"


def format_metric(kind: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return MISSING
    if kind == "auto":
        kind = "count" if float(v).is_integer() else "s"
    if kind == "count":
        return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"
    if kind == "pct":
        return _fmt_num(v * 100)
    if kind == "ratio":
        return f"{v:.2f}"
    if kind == "rate":
        return f"{v:.1f}" if abs(v) >= 1 else _fmt_num(v)
    if kind == "mib":
        return f"{v / MiB:,.1f}"
    return _fmt_num(v)


def _metric_row(key: str) -> Metric:
    for m in (*METRICS, *EXTRA_METRICS):
        if m.key == key:
            return m
    return Metric(key, key.replace("_", " "), "auto")


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "r", left: int = 1
) -> str:
    """A markdown table; the first `left` columns left-aligned (labels), the rest `align`ed."""
    spec = [":---"] * left + [("---:" if align == "r" else ":---")] * (len(header) - left)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(spec) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _verdict(run: Run, policy: str) -> str:
    """PASS only when some checker ran and none found a problem."""
    per = run.checks.get(policy)
    if not per:
        return "not checked"
    n = sum(len(p) for p in per.values())
    return "PASS" if n == 0 else f"**FAIL** ({n})"


def headline_table(folder: str | Path) -> str:
    """The per-policy results table (metrics as rows, policies as columns) for the CLI."""
    return _headline(load_run(folder))


def _headline(run: Run) -> str:
    keys = run.metric_keys()
    header = ["metric", *(_md(policy_label(p)) for p in run.policies)]
    rows = []
    for key in keys:
        m = _metric_row(key)
        vals = [run.metrics.get(p, {}).get(key) for p in run.policies]
        if m.key not in _KNOWN_METRICS and all(v is None for v in vals):
            continue
        rows.append([_md(m.label), *(format_metric(m.kind, v) for v in vals)])
    rows.append(["checks", *(_verdict(run, p) for p in run.policies)])
    return _table(header, rows)


def _fmt_seeds(seeds: Sequence[int]) -> str:
    if not seeds:
        return MISSING
    if len(seeds) > 3 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    if len(seeds) > 10:
        return ", ".join(map(str, seeds[:10])) + f", … ({len(seeds)} seeds)"
    return ", ".join(map(str, seeds))


def _fmt_date(value: Any) -> str:
    if not value:
        return MISSING
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(value)


def _percentile_rows(comp: Completions | None) -> list[str]:
    if comp is None or comp.values.size == 0:
        return ["0"] + [MISSING] * len(PERCENTILES)
    q = np.percentile(comp.values, PERCENTILES)
    return [f"{comp.values.size:,}", *(_fmt_num(float(v)) for v in q)]


def _checks_section(run: Run) -> list[str]:
    checkers = list(CHECKERS)
    checkers += sorted({c for per in run.checks.values() for c in per} - set(CHECKERS))
    rows = []
    details: list[str] = []
    for p in run.policies:
        per = run.checks.get(p)
        if not per:
            rows.append([_md(policy_label(p)), *([MISSING] * len(checkers)), "not checked"])
            continue
        cells = []
        for c in checkers:
            probs = per.get(c)
            if probs is None:
                cells.append(MISSING)
            elif not probs:
                cells.append("PASS")
            else:
                cells.append(f"**FAIL** ({len(probs)})")
                details.append(
                    f"- **{policy_label(p)} / {c}**: {len(probs)} problem"
                    f"{'s' if len(probs) != 1 else ''}"
                )
                details += [f"  - {_md(x)}" for x in probs[:MAX_PROBLEMS_SHOWN]]
                if len(probs) > MAX_PROBLEMS_SHOWN:
                    details.append(f"  - … and {len(probs) - MAX_PROBLEMS_SHOWN} more")
        rows.append([_md(policy_label(p)), *cells, _verdict(run, p)])
    out = [_table(["policy", *checkers, "verdict"], rows, align="l")]
    if details:
        out += ["", "First problems per failing checker:", "", *details]
    return out


def _memory_section(memory: dict[tuple[str, int], list[RssSample]]) -> list[str]:
    """Per agent: resident memory at its first and last sample, peak, and the growth of its last
    process (a restart starts afresh: growth across it would be meaningless)."""
    rows = []
    for (policy, seed), samples in sorted(memory.items()):
        for m in agent_memory(samples):
            rows.append([_md(policy_label(policy)), str(seed), _md(m.node),
                         *(f"{v / MiB:,.1f}" for v in (m.start, m.end, m.peak, m.growth)),
                         str(m.restarts)])  # fmt: skip
    out = [
        "Resident memory (RSS) of every agent process, sampled by the runner [MiB]; growth is "
        "from the first to the last sample of the agent's last process.",
        "",
        _table(["policy", "seed", "agent", "start", "end", "peak", "growth", "restarts"],
               rows[:MAX_TIMELINE_ROWS], left=3),
    ]  # fmt: skip
    if len(rows) > MAX_TIMELINE_ROWS:
        out += ["", f"… and {len(rows) - MAX_TIMELINE_ROWS} more agents (rss.csv has them all)."]
    return out


def _timeline_section(run: Run, faults: list[Fault]) -> list[str]:
    if not faults:
        return ["No faults were injected."]
    runs = {(f.policy, f.seed) for f in faults}
    expected = len(run.policies) * len(run.seeds)
    total = max(len(runs), expected)
    groups: dict[tuple[float, str, str, str], list[tuple[str, int]]] = {}
    for f in faults:
        groups.setdefault((round(f.t, 2), f.subject, f.node, f.detail), []).append(
            (f.policy, f.seed)
        )
    rows = []
    for (t, subject, node, detail), where in sorted(groups.items(), key=lambda kv: kv[0][0]):
        where = sorted(set(where))
        if len(where) >= total:
            seen = "all"
        else:
            seen = ", ".join(f"{policy_label(p)}/{s}" for p, s in where[:4])
            seen += f" +{len(where) - 4}" if len(where) > 4 else ""
        rows.append([_fmt_num(t), _md(subject), _md(node or MISSING), _md(detail or MISSING),
                     _md(seen)])
    out = [_table(["t [s]", "fault", "target", "detail", "runs (policy/seed)"],
                  rows[:MAX_TIMELINE_ROWS], align="l")]
    if len(rows) > MAX_TIMELINE_ROWS:
        out += ["", f"… and {len(rows) - MAX_TIMELINE_ROWS} more fault events in {EVENTS_FILE}."]
    return out


def _render_markdown(
    run: Run,
    comps: dict[str, Completions],
    faults: list[Fault],
    kinds: Counter[str],
    plots: list[tuple[str, str]],
    plot_note: str | None,
    memory: dict[tuple[str, int], list[RssSample]],
) -> str:
    info = run.info
    title = (
        f"# {run.scenario} · {run.mode} · seed{'s' if len(run.seeds) != 1 else ''} "
        f"{_fmt_seeds(run.seeds)} · "
        f"{_fmt_date(info.get('started'))} · code {info.get('code_version') or MISSING}"
    )
    lines = [title, ""]
    if not run.complete:
        lines += [
            "> ## ⚠ INCOMPLETE RUN",
            "> The run was interrupted before it finished: every number, check and plot below "
            "covers only the part that ran.",
            "",
        ]
    if info.get("description"):
        lines += [str(info["description"]), ""]
    wall = info.get("wall_seconds")
    duration = info.get("duration")
    lines += [
        f"- **mode**: {run.mode} · **nodes**: {info.get('nodes', MISSING)} · "
        f"**scenario duration**: "
        f"{_fmt_num(duration) + ' s' if _is_number(duration) else MISSING} · "
        f"**wall time**: {_fmt_num(wall) + ' s' if _is_number(wall) else MISSING}",
        f"- **policies**: {', '.join(policy_label(p) for p in run.policies) or MISSING}",
        f"- **seeds**: {_fmt_seeds(run.seeds)} · **started**: {info.get('started', MISSING)} · "
        f"**code version**: {info.get('code_version', MISSING)}",
        "",
        "## Fault mechanisms",
        "",
    ]
    mech = info.get("fault_mechanisms") or {}
    if mech:
        lines.append(_table(["fault", "mechanism"],
                            [[_md(k), _md(v)] for k, v in mech.items()], align="l"))
    else:
        lines.append("None recorded.")
    lines += ["", "## Results", "", _headline(run), ""]
    lines += [
        "Completion-time percentiles [s], all seeds pooled:",
        "",
        _table(
            ["policy", "completed", *(f"p{q}" for q in PERCENTILES)],
            [[_md(policy_label(p)), *_percentile_rows(comps.get(p))] for p in run.policies],
        ),
        "",
        "## Checks",
        "",
        *_checks_section(run),
        "",
        "## Faults timeline",
        "",
        *_timeline_section(run, faults),
        "",
        f"Events recorded: {kinds.get('fault', 0):,} fault, {kinds.get('member', 0):,} "
        f"membership, {kinds.get('task', 0):,} task.",
        "",
    ]
    if memory:
        lines += ["## Resident memory", "", *_memory_section(memory), ""]
    lines += ["## Plots", ""]
    if plot_note:
        lines += [plot_note, ""]
    for file, caption in plots:
        lines += [f"![{file.removesuffix('.png').replace('_', ' ')}]({file})", "",
                  f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- plots

# Faults are drawn in greys told apart by line style and label, so they never share a colour
# with a policy's line. An instant kind -> (colour, line style, width); a span kind -> hatch.
FAULT_LINES: dict[str, tuple[str, Any, float]] = {
    "crash": ("#222222", "-", 1.8),
    "restart": ("#222222", (0, (6, 3)), 1.4),
    "loss": ("#555555", ":", 1.8),
    "delay": ("#555555", "-.", 1.4),
}
_OTHER_LINE: tuple[str, Any, float] = ("#555555", (0, (2, 2)), 1.2)
FAULT_SPANS = {"partition": "", "pause": "///"}
_SPAN_COLOR = "#7a7a7a"


@dataclass
class Mark:
    start: float
    end: float | None  # None: an instant (a line), else a span
    kind: str
    label: str


def fault_marks(faults: Sequence[Fault], t_end: float) -> list[Mark]:
    """Pair partition..heal and pause..resume into spans; everything else is an instant."""
    marks: list[Mark] = []
    open_parts: list[Fault] = []
    paused: dict[str, Fault] = {}
    for f in sorted(faults, key=lambda x: x.t):
        if f.subject == "partition":
            open_parts.append(f)
        elif f.subject == "heal" and open_parts:
            for p in open_parts:
                marks.append(Mark(p.t, f.t, "partition", p.label))
            open_parts = []
        elif f.subject == "pause" and f.node:
            paused.setdefault(f.node, f)
        elif f.subject == "resume" and f.node in paused:
            p = paused.pop(f.node)
            marks.append(Mark(p.t, f.t, "pause", p.label))
        else:
            marks.append(Mark(f.t, None, f.subject, f.label))
    for p in open_parts:
        marks.append(Mark(p.t, max(t_end, p.t), "partition", p.label + " (not healed)"))
    for p in paused.values():
        marks.append(Mark(p.t, max(t_end, p.t), "pause", p.label + " (not resumed)"))
    return sorted(marks, key=lambda m: m.start)


def _shared_faults(faults: Sequence[Fault], seed: int) -> list[Fault]:
    """One seed's faults with the per-policy copies merged (the schedule is usually shared)."""
    seen: dict[tuple[float, str, str, str], Fault] = {}
    for f in faults:
        if f.seed == seed:
            seen.setdefault((round(f.t, 1), f.subject, f.node, f.detail), f)
    return sorted(seen.values(), key=lambda f: f.t)


def _draw_marks(ax: Any, marks: Sequence[Mark], text: bool, on_image: bool = False) -> None:
    """Faults on a time axis: spans shaded, instants as lines; on a heatmap, spans become a
    strip along the top plus edge lines, and lines get a white halo to show on any colour."""
    from matplotlib import patheffects

    lo, hi = ax.get_xlim()
    min_gap = (hi - lo) * 0.012
    last_text = -math.inf
    trans = ax.get_xaxis_transform()
    labelled = text and len(marks) <= MAX_FAULT_LABELS
    halo = [patheffects.withStroke(linewidth=3.2, foreground="white")] if on_image else None
    for m in marks:
        if m.end is None:
            color, ls, lw = FAULT_LINES.get(m.kind, _OTHER_LINE)
            ax.axvline(m.start, color=color, lw=lw, ls=ls, zorder=3, path_effects=halo)
        elif on_image:
            for x in (m.start, m.end):
                ax.axvline(x, color=_SPAN_COLOR, lw=1.2, ls=(0, (1, 1)), zorder=3,
                           path_effects=halo)
            ax.axvspan(m.start, m.end, ymin=0.965, ymax=1.0, facecolor="white",
                       edgecolor="black", lw=0.8, hatch=FAULT_SPANS.get(m.kind, "..."), zorder=3)
        else:
            ax.axvspan(m.start, m.end, facecolor=_SPAN_COLOR, alpha=0.16, lw=0, zorder=0)
            if FAULT_SPANS.get(m.kind, "..."):
                ax.axvspan(m.start, m.end, facecolor="none", edgecolor=_SPAN_COLOR, alpha=0.5,
                           lw=0, hatch=FAULT_SPANS.get(m.kind, "..."), zorder=0)
        if labelled and m.start - last_text >= min_gap:
            ax.text(m.start, 0.95, m.label + " ", transform=trans, rotation=90, va="top",
                    ha="right", fontsize=8, color="#222222", zorder=4,
                    bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})
            last_text = m.start


def _fault_handles(marks: Sequence[Mark]) -> list[Any]:
    """Legend entries, one per fault kind present, styled as drawn on a line plot."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = []
    seen = set()
    for m in marks:
        key = (m.kind, m.end is None)
        if key in seen:
            continue
        seen.add(key)
        if m.end is None:
            color, ls, lw = FAULT_LINES.get(m.kind, _OTHER_LINE)
            handles.append(Line2D([], [], color=color, lw=lw, ls=ls, label=f"fault: {m.kind}"))
        else:
            handles.append(Patch(facecolor="#d6d6d6", edgecolor=_SPAN_COLOR,
                                 hatch=FAULT_SPANS.get(m.kind, "..."), label=f"fault: {m.kind}"))
    return handles


def _styles(policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A stable colour per policy; the omniscient baseline is a black dashed reference."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#bcbd22", "#17becf", "#7f7f7f"]
    out: dict[str, dict[str, Any]] = {}
    i = 0
    for p in policies:
        if p == OMNISCIENT:
            out[p] = {"color": "black", "ls": "--"}
        else:
            out[p] = {"color": palette[i % len(palette)], "ls": "-"}
            i += 1
    return out


def _new_figure(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=PLOT_DPI, format="png")


def plot_completion_cdf(
    path: Path, scenario: str, policies: Sequence[str], comps: dict[str, Completions]
) -> None:
    """Share of accepted tasks done within x seconds; a curve's plateau is its completion rate."""
    from matplotlib.ticker import PercentFormatter

    fig, axes = _new_figure()
    ax = axes[0, 0]
    styles = _styles(policies)
    drawn = [p for p in policies if p in comps and comps[p].values.size]
    for p in drawn:
        c = comps[p]
        v = c.values
        y = np.arange(1, v.size + 1) / c.accepted
        if v.size > CDF_MAX_POINTS:
            idx = np.unique(np.linspace(0, v.size - 1, CDF_MAX_POINTS).astype(np.int64))
            v, y = v[idx], y[idx]
        p50, p99 = np.percentile(c.values, [50, 99])
        ax.step(np.r_[v[0], v], np.r_[0.0, y], where="post", lw=2, **styles[p],
                label=f"{policy_label(p)}: {c.values.size:,} done, "
                      f"p50 {_fmt_num(float(p50))} s, p99 {_fmt_num(float(p99))} s")
    if drawn:
        allv = np.concatenate([comps[p].values for p in drawn])
        pos = allv[allv > 0]
        if pos.size and pos.max() / pos.min() > 100:
            ax.set_xscale("log")
        ax.legend(loc="lower right", fontsize=10, framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "no completed tasks", transform=ax.transAxes, ha="center",
                va="center", fontsize=18, color="#888888")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("completion time (submitted → finished) [s]", fontsize=11)
    ax.set_ylabel("accepted tasks completed within x", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{scenario}: completion-time CDF per policy (all seeds pooled)", fontsize=13)
    _save(fig, path)


def _pick_seed(series: dict[tuple[str, int], Series], policy: str, seed: int) -> Series | None:
    if (policy, seed) in series:
        return series[(policy, seed)]
    others = sorted(s for p, s in series if p == policy)
    return series[(policy, others[0])] if others else None


def _time_panels(
    path: Path,
    title: str,
    policies: Sequence[str],
    series: dict[tuple[str, int], Series],
    seed: int,
    marks: Sequence[Mark],
    panels: Sequence[tuple[str, str, str, bool]],  # attribute, panel title, y label, percent?
    t_end: float,
) -> None:
    """Two stacked panels over time sharing the x axis, a line per policy, faults marked."""
    from matplotlib.ticker import PercentFormatter

    fig, axes = _new_figure(len(panels), 1, sharex=True)
    styles = _styles(policies)
    drawn = []
    for ax, (attr, ptitle, ylabel, pct) in zip(axes[:, 0], panels, strict=True):
        for p in policies:
            s = _pick_seed(series, p, seed)
            if s is None or s.t.size == 0:
                continue
            y = getattr(s, attr)
            step = attr == "live"
            ax.plot(s.t, y, lw=1.8, drawstyle="steps-post" if step else "default",
                    label=policy_label(p), **styles[p])
            if p not in drawn:
                drawn.append(p)
        ax.set_title(ptitle, fontsize=11, loc="left")
        ax.set_ylabel(ylabel, fontsize=10)
        ax.grid(True, alpha=0.3)
        if pct:
            ax.set_ylim(0, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        else:
            ax.set_ylim(bottom=0)
    axes[0, 0].set_xlim(0, t_end)
    if not drawn:
        axes[0, 0].text(0.5, 0.5, "no samples recorded", transform=axes[0, 0].transAxes,
                        ha="center", va="center", fontsize=16, color="#888888")
    for i, ax in enumerate(axes[:, 0]):
        top = ax.get_ylim()[1]
        if not panels[i][3]:
            ax.set_ylim(0, top * 1.08 if top > 0 else 1)
        _draw_marks(ax, marks, text=i == 0)
    axes[-1, 0].set_xlabel("time since run start [s]", fontsize=11)
    handles = axes[0, 0].get_legend_handles_labels()[0] + _fault_handles(marks)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=9,
                   ncol=min(len(handles), 5))
    fig.suptitle(title, fontsize=13)
    _save(fig, path)


def _bin_mean(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean of consecutive groups of k along axis, ignoring NaN (all-NaN group -> NaN)."""
    if k <= 1:
        return a
    a = np.moveaxis(a, axis, 0)
    n = a.shape[0]
    pad = (-n) % k
    if pad:
        a = np.concatenate([a, np.full((pad, *a.shape[1:]), np.nan, dtype=a.dtype)])
    g = a.reshape(-1, k, *a.shape[1:])
    ok = np.isfinite(g)
    s = np.where(ok, g, 0).sum(axis=1, dtype=np.float64)
    c = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    return np.moveaxis(m, 0, axis)


def _edges(t: np.ndarray) -> np.ndarray:
    """Cell edges halfway between sample times (so uneven sampling is drawn honestly)."""
    if t.size == 1:
        return np.array([t[0] - 0.5, t[0] + 0.5])
    mid = (t[:-1] + t[1:]) / 2
    return np.r_[t[0] - (mid[0] - t[0]), mid, t[-1] + (t[-1] - mid[-1])]


def plot_load_heatmap(
    path: Path,
    scenario: str,
    seed: int,
    panels: Sequence[HeatPanel],
    marks: dict[str, list[Mark]],
) -> None:
    """Per-node load, node x time; big clusters are averaged into bands of adjacent nodes."""
    import matplotlib as mpl

    n = max(1, len(panels))
    nrows, ncols = (1, 1) if n == 1 else (1, 2) if n == 2 else (2, 2)
    fig, axes = _new_figure(nrows, ncols, sharex=True)
    cmap = mpl.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    mesh = None
    band = 1
    for i, ax in enumerate(axes.ravel()):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        hp = panels[i]
        k_rows = max(1, math.ceil(len(hp.nodes) / HEATMAP_MAX_ROWS))
        k_cols = max(1, math.ceil(hp.t.size / HEATMAP_MAX_COLS))
        band = max(band, k_rows)
        z = _bin_mean(_bin_mean(hp.load, k_rows, 0), k_cols, 1)
        tt = hp.t if k_cols == 1 else _bin_mean(hp.t, k_cols, 0)
        y_edges = np.arange(z.shape[0] + 1)
        mesh = ax.pcolormesh(_edges(tt), y_edges, np.ma.masked_invalid(z), cmap=cmap,
                             vmin=0, vmax=1, shading="flat")
        ax.set_ylim(z.shape[0], 0)
        ticks = np.unique(np.linspace(0, z.shape[0] - 1, min(z.shape[0], 8)).astype(int))
        ax.set_yticks(ticks + 0.5)
        ax.set_yticklabels([hp.nodes[t * k_rows] for t in ticks], fontsize=8)
        ax.set_title(f"{policy_label(hp.policy)}", fontsize=11, loc="left")
        ax.set_ylabel("node" if k_rows == 1 else f"node (band = mean of {k_rows})", fontsize=10)
        _draw_marks(ax, marks.get(hp.policy, []), text=i == 0, on_image=True)
    for col in range(ncols):
        visible = [ax for ax in axes[:, col] if ax.get_visible()]
        if visible:  # the lowest visible panel of a column carries the time axis
            visible[-1].xaxis.set_tick_params(labelbottom=True)
            visible[-1].set_xlabel("time since run start [s]", fontsize=11)
    if mesh is None:
        ax = axes[0, 0]
        ax.set_visible(True)
        ax.text(0.5, 0.5, "no per-node load recorded", transform=ax.transAxes, ha="center",
                va="center", fontsize=16, color="#888888")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        fig.colorbar(mesh, ax=axes.ravel().tolist(), label="load (grey: no sample)",
                     fraction=0.04, pad=0.01)
        all_marks = [m for p in panels for m in marks.get(p.policy, [])]
        handles = _fault_handles(all_marks)
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
                       fontsize=9)
    nodes = max((len(p.nodes) for p in panels), default=0)
    fig.suptitle(f"{scenario}: per-node load, seed {seed} ({nodes:,} nodes"
                 + (f", bands of {band}" if band > 1 else "") + ")", fontsize=13)
    _save(fig, path)


def plot_rss(path: Path, scenario: str, seed: int,
             memory: dict[tuple[str, int], list[RssSample]], policies: Sequence[str],
             marks: dict[str, list[Mark]]) -> None:  # fmt: skip
    """Each agent's resident memory over time, a panel per policy; a restarted agent's new
    process is a new line segment in the same colour, so the drop at a restart shows."""
    shown = [p for p in policies if (p, seed) in memory][:HEATMAP_MAX_PANELS]
    fig, axes = _new_figure(max(1, len(shown)), 1, sharex=True)
    palette = [f"C{i}" for i in range(10)]
    for ax, policy in zip(axes[:, 0], shown, strict=False):
        lives: dict[tuple[str, int], list[RssSample]] = defaultdict(list)
        for smp in sorted(memory[(policy, seed)], key=lambda x: x.t):
            lives[(smp.node, smp.pid)].append(smp)
        nodes = sorted({n for n, _ in lives}, key=_natural_key)
        colour = {n: palette[i % len(palette)] for i, n in enumerate(nodes)}
        labelled: set[str] = set()
        for (node, _pid), ss in lives.items():
            ax.plot([x.t for x in ss], [x.rss / MiB for x in ss], lw=1.6, color=colour[node],
                    marker="." if len(ss) == 1 else None,
                    label=None if node in labelled else node)  # fmt: skip
            labelled.add(node)
        ax.set_title(policy_label(policy), fontsize=11, loc="left")
        ax.set_ylabel("resident memory [MiB]", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if len(nodes) <= 20:
            ax.legend(loc="lower right", fontsize=8, ncol=min(len(nodes), 10), framealpha=0.9)
        _draw_marks(ax, marks.get(policy, []), text=ax is axes[0, 0])
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no memory samples", transform=axes[0, 0].transAxes,
                        ha="center", va="center", fontsize=16, color="#888888")
    axes[-1, 0].set_xlabel("time since run start [s]", fontsize=11)
    fig.suptitle(f"{scenario}: agent resident memory over time, seed {seed}", fontsize=13)
    _save(fig, path)


def _write_plots(
    run: Run,
    comps: dict[str, Completions],
    faults: list[Fault],
    series: dict[tuple[str, int], Series],
    heat: dict[str, HeatPanel],
    heat_seed: int,
    memory: dict[tuple[str, int], list[RssSample]],
) -> list[tuple[str, str]]:
    import matplotlib as mpl

    folder, scenario, pols = run.folder, run.scenario, run.policies
    seed = run.seeds[0] if run.seeds else min((s for _, s in series), default=0)
    t_max = max((float(s.t[-1]) for s in series.values() if s.t.size), default=0.0)
    duration = run.info.get("duration")
    t_end = max(t_max, float(duration) if _is_number(duration) else 0.0) or 1.0
    marks = fault_marks(_shared_faults(faults, seed), t_end)
    nseeds = len(run.seeds)
    seed_note = f"seed {seed}" + (f" of {nseeds}" if nseeds > 1 else "")
    out = []
    with mpl.rc_context({"font.size": 10, "axes.titleweight": "bold"}):
        plot_completion_cdf(folder / "completion_cdf.png", scenario, pols, comps)
        out.append(("completion_cdf.png",
                    "Completion-time CDF per policy, all seeds pooled; the height where a curve "
                    "levels off is the share of accepted tasks that completed."))
        plot_utilization = (
            ("total_util", "total utilization (all load on the nodes)", "utilization", True),
            ("task_util", "task utilization (agora tasks only)", "utilization", True),
        )
        _time_panels(folder / "utilization.png",
                     f"{scenario}: cluster utilization over time ({seed_note})",
                     pols, series, seed, marks, plot_utilization, t_end)
        out.append(("utilization.png",
                    f"Cluster utilization over time, total and task-only ({seed_note}); "
                    "shaded spans are partitions/pauses, lines are crashes and other faults."))
        plot_inflight = (
            ("in_flight", "tasks in flight", "tasks", False),
            ("live", "live members (nodes up, per the runner)", "nodes", False),
        )
        _time_panels(folder / "inflight.png",
                     f"{scenario}: tasks in flight and live members ({seed_note})",
                     pols, series, seed, marks, plot_inflight, t_end)
        out.append(("inflight.png",
                    f"Tasks in flight and live members over time ({seed_note}), faults marked."))
        shown = [heat[p] for p in pols if p in heat]
        if len(pols) > HEATMAP_MAX_PANELS:
            shown = shown[:1]
        heat_marks = {
            hp.policy: fault_marks(
                [f for f in faults if f.policy == hp.policy and f.seed == heat_seed], t_end)
            for hp in shown
        }
        plot_load_heatmap(folder / "load_heatmap.png", scenario, heat_seed, shown, heat_marks)
        out.append(("load_heatmap.png",
                    f"Per-node load (node × time), seed {heat_seed}; grey = no sample "
                    "(e.g. a crashed node); faults marked on the time axis."))
        if memory:
            rss_seed = seed if any(s == seed for _, s in memory) else min(s for _, s in memory)
            rss_marks = {p: fault_marks([f for f in faults if f.policy == p and f.seed == rss_seed],
                                        t_end) for p in pols}  # fmt: skip
            plot_rss(folder / "rss.png", scenario, rss_seed, memory, pols, rss_marks)
            out.append(("rss.png",
                        f"Resident memory of every agent process over time, seed {rss_seed}; "
                        "a restart starts a new line segment; faults marked."))
    return out


def write_report(folder: str | Path) -> Path:
    """Write folder/report.md and its PNGs; every file is read (and checked) before writing."""
    run = load_run(folder)
    folder = run.folder
    comps = read_completions(folder / TASKS_FILE)
    faults, kinds = read_events(folder / EVENTS_FILE)
    series = read_timeseries(folder / TIMESERIES_FILE)
    heat_seed = run.seeds[0] if run.seeds else 0
    heat = read_nodeload(folder / NODELOAD_FILE, run.policies[:HEATMAP_MAX_PANELS], heat_seed)
    memory = read_rss(folder / RSS_FILE)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plots: list[tuple[str, str]] = []
        note: str | None = "Plots skipped: matplotlib is not installed (pip install matplotlib)."
    else:
        plots = _write_plots(run, comps, faults, series, heat, heat_seed, memory)
        note = None
    path = folder / REPORT_FILE
    text = _render_markdown(run, comps, faults, kinds, plots, note, memory)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- compare


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return MISSING
    return f"×{a / b:.2f}"


def compare(folders: Sequence[str | Path]) -> str:
    """Side-by-side markdown of several results folders, plus local/sim fidelity ratios."""
    if not folders:
        raise ReportError("compare: no results folders given")
    runs = [load_run(f) for f in folders]
    comps = [read_completions(r.folder / TASKS_FILE) for r in runs]
    names = [r.folder.name or str(r.folder) for r in runs]
    if len(set(names)) < len(names):
        names = [str(Path(*r.folder.resolve().parts[-2:])) for r in runs]
    heads = [
        f"{_md(r.scenario)} ({_md(r.mode)}) · {_md(n)}" + ("" if r.complete else " INCOMPLETE")
        for r, n in zip(runs, names, strict=True)
    ]
    common = [p for p in runs[0].policies if all(p in r.policies for r in runs[1:])]
    lines = ["# Scenario comparison", ""]
    for h, r in zip(heads, runs, strict=True):
        lines.append(
            f"- **{h}**: `{r.folder}`, seeds {_fmt_seeds(r.seeds)}, code "
            f"{r.info.get('code_version') or MISSING}, started {_fmt_date(r.info.get('started'))}"
            + ("" if r.complete else " — **INCOMPLETE run**")
        )
    lines += ["", "## Metrics per policy", ""]
    if common:
        keys = list(dict.fromkeys(k for r in runs for k in r.metric_keys()))
        rows = []
        for p in common:
            first = True
            for key in keys:
                m = _metric_row(key)
                vals = [r.metrics.get(p, {}).get(key) for r in runs]
                if all(v is None for v in vals):
                    continue
                rows.append([f"**{_md(policy_label(p))}**" if first else "", _md(m.label),
                             *(format_metric(m.kind, v) for v in vals)])
                first = False
            rows.append(["" if not first else f"**{_md(policy_label(p))}**", "checks",
                         *(_verdict(r, p) for r in runs)])
        lines.append(_table(["policy", "metric", *heads], rows, left=2))
    else:
        lines.append("No policy is present in every folder.")
    lines += ["", "## Completion-time percentiles [s], all seeds pooled", ""]
    rows = []
    for h, r, c in zip(heads, runs, comps, strict=True):
        for p in r.policies:
            rows.append([h, _md(policy_label(p)), *_percentile_rows(c.get(p))])
    lines.append(_table(["run", "policy", "completed", *(f"p{q}" for q in PERCENTILES)], rows,
                        left=2))
    fidelity = []
    for i, a in enumerate(runs):
        for j, b in enumerate(runs):
            if a.mode != "local" or b.mode != "sim":
                continue
            shared = [p for p in a.policies if p in b.policies and p in a.metrics
                      and p in b.metrics]
            if not shared:
                fidelity.append(f"- **fidelity** local/sim, {names[i]} vs {names[j]}: "
                                "no policy in common.")
            for p in shared:
                ma, mb = a.metrics[p], b.metrics[p]
                parts = [
                    f"{label} {_ratio(ma.get(key), mb.get(key))}"
                    for key, label in FIDELITY_METRICS
                ]
                fidelity.append(f"- **fidelity** local/sim, {names[i]} vs {names[j]}, "
                                f"{policy_label(p)}: " + ", ".join(parts))
    if fidelity:
        lines += ["", "## Fidelity (local ÷ sim; ×1.00 = the simulator predicted it exactly)", "",
                  *fidelity]
    return "\n".join(lines).rstrip() + "\n"
