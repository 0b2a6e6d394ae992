"""Shipped scenarios measured against the issue's targets, for docs/benchmarks.md.

    python -m scenarios.bench.scenarios [--only steady,high-load,churn,fidelity,scale]
        [--out results/bench]

- steady / high-load (sim, 3 seeds): predictive against the omniscient ideal (target: within
  10 % on mean completion time) and against sparrow at high load (target: >= 15 % better on
  mean and p99), with the last-value ablation, least-loaded and random beside them;
- churn (sim, 3 seeds, fast restarts): lost / duplicate / stuck tasks (target 0) and recovery
  time against failure detection time (target: recovery <= detection + 1 s);
- fidelity: the same scenarios (`churn`, 30 nodes, crashes and fast restarts; `partition`,
  20 nodes, a split that heals) in sim and in local mode, side by side: detection time, false
  failures and the completion-time distribution, local / sim;
- scale: 5,000 nodes on the simulator (target: within 10 minutes wall);

The local runs are also the "local mode with 20 or more namespaced agents" figure.

Each run's full report stays in the results folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from scenarios import runner
from scenarios.bench.machine import describe
from scenarios.cli import shipped
from scenarios.metrics import percentile
from scenarios.policies import label
from scenarios.spec import load

SECTIONS = ("steady", "high-load", "churn", "fidelity", "scale")
FIDELITY = ("churn", "partition")  # with crashes and fast restarts; with a partition that heals


def _run(name: str, mode: str, out: Path, **kw: Any) -> tuple[dict[str, Any], dict, float]:
    sc = load(shipped()[name])
    t0 = time.monotonic()
    runner.run(sc, mode, out, progress=sys.stderr.isatty(), **kw)
    wall = time.monotonic() - t0
    doc = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "run.json").read_text())
    return doc, info, wall


def _f(v: Any, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(a: float | None, b: float | None) -> str:
    """How much a is below b, in % of b (positive = a better when lower is better)."""
    if a is None or b is None or b == 0:
        return "–"
    return f"{100 * (b - a) / b:+.1f} %"


def placement(name: str, out: Path) -> str:
    doc, info, wall = _run(name, "sim", out / f"{name}-sim")
    pol = doc["policies"]
    rows = [f"### {name} (sim, {info['nodes']} nodes, seeds {info['seeds']})", "",
            f"`agora scenario run {name} --mode sim --out {out}/{name}-sim` — {wall:.0f} s wall.",
            "", "| policy | mean s | p50 s | p99 s | slowdown | deadline misses | checks |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p, m in pol.items():
        bad = sum(len(v) for v in doc["checks"][p].values())
        misses = None if m["deadline_misses"] is None else 100 * m["deadline_misses"]
        rows.append(f"| {label(p)} | {_f(m['mean_completion'])} | {_f(m['p50_completion'])} | "
                    f"{_f(m['p99_completion'])} | {_f(m['mean_slowdown'], '.2f')} | "
                    f"{_f(misses)} % | {'PASS' if not bad else f'FAIL ({bad})'} |")  # fmt: skip
    pr, om, sp = pol.get("predictive"), pol.get("omniscient"), pol.get("sparrow")
    rows.append("")
    if pr and om:
        gap = (pr["mean_completion"] / om["mean_completion"] - 1) * 100
        rows.append(f"- predictive vs omniscient, mean completion: {gap:+.1f} % "
                    f"(target: within 10 %: **{'met' if gap <= 10 else 'MISSED'}**)")
    if pr and sp:
        mean, p99 = _pct(pr["mean_completion"], sp["mean_completion"]), _pct(
            pr["p99_completion"], sp["p99_completion"])
        met = (pr["mean_completion"] <= 0.85 * sp["mean_completion"]
               and pr["p99_completion"] <= 0.85 * sp["p99_completion"])  # fmt: skip
        target = f" (target at high load: >= 15 % better on both: **{'met' if met else 'MISSED'}**)"
        rows.append(f"- predictive vs sparrow: mean {mean}, p99 {p99} better"
                    + (target if name == "high-load" else ""))
    lv = pol.get("predictive-lastvalue")
    if pr and lv:
        rows.append(f"- forecast ablation (last value instead of the meta-learned forecast): "
                    f"mean {_pct(pr['mean_completion'], lv['mean_completion'])}, p99 "
                    f"{_pct(pr['p99_completion'], lv['p99_completion'])} better with the forecast")
    return "\n".join(rows)


def churn(out: Path) -> str:
    doc, info, wall = _run("churn", "sim", out / "churn-sim")
    rows = [f"### churn (sim, {info['nodes']} nodes, seeds {info['seeds']}: 30 % crash at once, "
            "half restart after 0.5-10 s)", "",
            f"`agora scenario run churn --mode sim --out {out}/churn-sim` — {wall:.0f} s wall.", "",
            "| policy | lost | duplicates | stuck | detection mean / max s | recovery mean / max s "
            "| undetected (restarted first) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p, m in doc["policies"].items():
        rows.append(f"| {label(p)} | {m['lost']} | {m['duplicates']} | {m['stuck']} | "
                    f"{_f(m['detection_time_mean'], '.2f')} / {_f(m['detection_time_max'], '.2f')}"
                    f" | {_f(m['recovery_time_mean'], '.2f')} / "
                    f"{_f(m['recovery_time_max'], '.2f')} | {m['crashes_undetected']} |")
    rows.append("")
    for p, m in doc["policies"].items():
        zero = m["lost"] == m["duplicates"] == m["stuck"] == 0
        rec = (m["recovery_time_max"] is not None and m["detection_time_max"] is not None
               and m["recovery_time_max"] <= m["detection_time_max"] + 1)  # fmt: skip
        rows.append(f"- {label(p)}: zero lost/duplicate/stuck **{'met' if zero else 'MISSED'}**; "
                    f"recovery <= detection + 1 s **{'met' if rec else 'MISSED'}**")
        for k in ("lost", "stuck", "duplicate_results"):
            for problem in doc["checks"][p][k][:3]:
                rows.append(f"  - {k}: {problem}")
    return "\n".join(rows)


def fidelity(out: Path, name: str) -> str:
    """One shipped scenario in both modes, one seed, predictive."""
    kw = {"seeds": (1,), "policies": ("predictive",)}
    sim, si, sim_wall = _run(name, "sim", out / f"{name}-sim", **kw)
    loc, li, loc_wall = _run(name, "local", out / f"{name}-local", **kw)
    s, lo = sim["policies"]["predictive"], loc["policies"]["predictive"]

    def ratio(k: str) -> str:
        return "–" if not s.get(k) or lo.get(k) is None else f"{lo[k] / s[k]:.2f}"

    comp = {}
    for mode, folder in (("sim", out / f"{name}-sim"), ("local", out / f"{name}-local")):
        xs = []
        for line in (folder / "tasks.csv").read_text().splitlines()[1:]:
            cells = line.split(",")
            if cells[5] == "succeeded" and cells[14]:
                xs.append(float(cells[14]))
        comp[mode] = [percentile(xs, q) for q in (0.1, 0.5, 0.9, 0.99)]
    rows = [f"### Sim vs local: the `{name}` scenario, {si['nodes']} agents (local: "
            f"{li['network']})", "",
            f"`agora scenario run {name} --mode sim|local --seed 1 --policies predictive` — "
            f"sim {sim_wall:.0f} s wall, local {loc_wall:.0f} s wall.", "",
            "| figure | sim | local | local / sim |", "|---|---|---|---|"]  # fmt: skip
    for k, what in (("mean_completion", "mean completion s"), ("p50_completion", "p50 s"),
                    ("p99_completion", "p99 s"), ("p50_submit_to_placed", "p50 submit→placed s"),
                    ("p99_submit_to_placed", "p99 submit→placed s"),
                    ("detection_time_mean", "crash detection, mean s"),
                    ("detection_time_max", "crash detection, max s"),
                    ("recovery_time_mean", "recovery, mean s"),
                    ("false_failures", "false failure declarations"),
                    ("messages_per_node_s", "messages per node per s"),
                    ("accepted", "tasks accepted"), ("completed", "tasks completed"),
                    ("lost", "lost"), ("duplicates", "duplicate results"),
                    ("stuck", "stuck")):  # fmt: skip
        rows.append(f"| {what} | {_f(s.get(k), '.3g')} | {_f(lo.get(k), '.3g')} | {ratio(k)} |")
    rows.append("| completion p10 / p50 / p90 / p99 s | "
                + " / ".join(f"{x:.2f}" for x in comp["sim"]) + " | "
                + " / ".join(f"{x:.2f}" for x in comp["local"]) + " | |")
    return "\n".join(rows)


def scale(out: Path) -> str:
    doc, info, wall = _run("scale", "sim", out / "scale-sim")
    m = doc["policies"]["predictive"]
    return "\n".join([
        f"### scale: {info['nodes']} nodes on the simulator", "",
        f"`agora scenario run scale --mode sim --out {out}/scale-sim`: **{wall:.0f} s wall** "
        f"(target: within 600 s: **{'met' if wall <= 600 else 'MISSED'}**). "
        f"{m['accepted']} tasks accepted, {m['completed']} completed; crash detection mean "
        f"{_f(m['detection_time_mean'], '.2f')} s, max {_f(m['detection_time_max'], '.2f')} s; "
        f"{m['lost']} lost, {m['duplicates']} duplicates, {m['stuck']} stuck, "
        f"{m['false_failures']} false failure declarations.",
    ])  # fmt: skip


def section(only: tuple[str, ...] = SECTIONS, out: Path = Path("results/bench")) -> str:
    parts = ["## Scenarios (`python -m scenarios.bench.scenarios`)", "", describe(), ""]
    for name in only:
        if name in ("steady", "high-load"):
            parts.append(placement(name, out))
        elif name == "churn":
            parts.append(churn(out))
        elif name == "fidelity":
            parts.extend(fidelity(out, f) + "\n" for f in FIDELITY)
        elif name == "scale":
            parts.append(scale(out))
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.scenarios", description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument("--out", default="results/bench", help="where the runs' folders go")
    args = p.parse_args(argv)
    only = tuple(x for x in args.only.split(",") if x)
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown} (known: {', '.join(SECTIONS)})")
    print(section(only, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
