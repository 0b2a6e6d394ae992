"""A scenario run's results folder: what was run (`run.json`, `scenario.toml`), the figures
(`metrics.json`) and the raw material behind them (`tasks.csv`, `events.csv`,
`timeseries.csv`, `nodeload.csv`, and in local mode `rss.csv`), from which `scenarios.report`
draws the report and plots.

Times are seconds since each run's t = 0. Floats are written with `repr` (round-trip exact),
so the same observations always give the same bytes: a sim run is reproducible to the byte.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scenarios import checkers, metrics
from scenarios.observation import Observation

TASK_COLUMNS = ("policy", "seed", "task", "submitted", "accepted", "state", "node", "attempt",
                "placed", "started", "finished", "cpus", "expected", "deadline", "completion",
                "slowdown", "deadline_met", "error")  # fmt: skip
EVENT_COLUMNS = ("policy", "seed", "t", "kind", "node", "subject", "detail")
SERIES_COLUMNS = ("policy", "seed", "t", "live_members", "in_flight", "task_utilization",
                  "total_utilization")  # fmt: skip
LOAD_COLUMNS = ("policy", "seed", "t", "node", "load")
RSS_COLUMNS = ("policy", "seed", "t", "node", "pid", "rss")  # rss in bytes


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(round(v, 6))
    return str(v)


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(v) for v in row])


def _task_rows(obs: Observation) -> Iterable[tuple]:
    for t in obs.tasks:
        r = t.record
        done = r is not None and r.state == "succeeded"
        completion = r.finished - t.submitted if done else math.nan
        met = (completion <= t.deadline) if (t.deadline > 0 and done) else (
            False if t.deadline > 0 else None)  # fmt: skip
        yield (obs.policy, obs.seed, t.task, t.submitted, t.accepted,
               r.state if r else ("refused" if not t.accepted else "lost"),
               r.node if r else "", r.attempt if r else "", r.placed if r else math.nan,
               r.started if r else math.nan, r.finished if r else math.nan, t.cpus, t.expected,
               t.deadline, completion, completion / t.expected if done and t.expected else
               math.nan, met, "" if t.accepted else t.error)  # fmt: skip


def _event_rows(obs: Observation) -> Iterable[tuple]:
    rows = []
    for f in obs.faults:
        e = f.event
        node = ",".join(obs.nodes[i] for i in e.nodes)
        rows.append((f.t, "fault", node, e.action, e.describe(lambda i: obs.nodes[i])))
    for m in obs.members:
        rows.append((m.t, "member", m.observer, m.peer, m.status))
    for r in obs.runs:
        rows.append((r.start, "task", r.node, r.task, f"running (attempt {r.attempt})"))
        if r.end is not None:
            rows.append((r.end, "task", r.node, r.task, f"{r.state} (attempt {r.attempt})"))
    rows.sort(key=lambda x: (x[0], x[1], x[2], x[3]))
    for row in rows:
        yield (obs.policy, obs.seed, *row)


def summary(obs: Observation) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(metrics, checker findings) of one observation."""
    found = checkers.check(obs)
    m = metrics.compute(obs)
    m["lost"] = len(found["lost"])
    m["duplicates"] = len(found["duplicate_results"])
    m["stuck"] = len(found["stuck"])
    return m, found


def pooled(runs: list[tuple[dict[str, Any], dict[str, list[str]]]],
           ) -> tuple[dict[str, Any], dict[str, list[str]]]:  # fmt: skip
    """One policy's figures over its seeds: means of the per-seed figures, counts summed,
    maxima kept; problems concatenated."""
    if len(runs) == 1:
        return runs[0]
    summed = ("tasks", "accepted", "completed", "lost", "duplicates", "stuck", "runs",
              "false_failures", "false_failures_by_disturbed", "crashes_detected",
              "crashes_undetected", "tasks_recovered", "tasks_unrecovered",
              "false_failures_in_loss", "false_failures_after_loss", "heals_unmerged",
              "heal_flaps")  # fmt: skip
    out: dict[str, Any] = {}
    for key in runs[0][0]:
        vals = [m[key] for m, _ in runs if m.get(key) is not None]
        if not vals:
            out[key] = None
        elif key in summed:
            out[key] = sum(vals)
        elif key.endswith("_max"):
            out[key] = max(vals)
        else:
            out[key] = sum(vals) / len(vals)
    found: dict[str, list[str]] = {}
    for _, f in runs:
        for k, v in f.items():
            found.setdefault(k, []).extend(v)
    return out, found


def write(folder: Path, run_info: dict[str, Any], scenario_text: str,
          observations: list[Observation], interval: float) -> dict[str, Any]:  # fmt: skip
    """Write every file but the report; returns the metrics document."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scenario.toml").write_text(scenario_text, encoding="utf-8")
    by_policy: dict[str, list] = {}
    for obs in observations:
        by_policy.setdefault(obs.policy, []).append(summary(obs))
    doc: dict[str, Any] = {"policies": {}, "checks": {}, "per_seed": {}}
    for policy, runs in by_policy.items():
        m, found = pooled(runs)
        doc["policies"][policy] = m
        doc["checks"][policy] = found
    for obs, s in zip(observations, [summary(o) for o in observations], strict=True):
        doc["per_seed"].setdefault(obs.policy, {})[str(obs.seed)] = s[0]
    (folder / "metrics.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    _write_csv(folder / "tasks.csv", TASK_COLUMNS, (r for o in observations for r in _task_rows(o)))
    _write_csv(folder / "events.csv", EVENT_COLUMNS,
               (r for o in observations for r in _event_rows(o)))  # fmt: skip
    _write_csv(folder / "timeseries.csv", SERIES_COLUMNS, (
        (o.policy, o.seed, s.t, s.live_members, s.in_flight, s.task_utilization,
         s.total_utilization) for o in observations for s in metrics.samples(o, interval)))
    _write_csv(folder / "nodeload.csv", LOAD_COLUMNS, (
        (o.policy, o.seed, t, node, load) for o in observations
        for t, node, load in metrics.node_loads(o, interval)))  # fmt: skip
    if any(o.rss for o in observations):
        _write_csv(folder / "rss.csv", RSS_COLUMNS, (
            (o.policy, o.seed, s.t, s.node, s.pid, s.rss) for o in observations for s in o.rss))
    info = dict(run_info)
    info["complete"] = info.get("complete", True) and all(o.complete for o in observations)
    info["notes"] = [f"{o.policy} seed {o.seed}: {n}" for o in observations for n in o.notes]
    (folder / "run.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return doc
