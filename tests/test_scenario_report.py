"""scenarios.report: report.md + PNGs from a results folder, and compare() of several folders."""

from __future__ import annotations

import csv
import json
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from scenarios.report import (
    OMNISCIENT_LABEL,
    Fault,
    HeatPanel,
    Mark,
    ReportError,
    compare,
    fault_marks,
    headline_table,
    plot_load_heatmap,
    write_report,
)

PNGS = ("completion_cdf.png", "utilization.png", "inflight.png", "load_heatmap.png")
TASK_COLS = (
    "policy,seed,task,submitted,accepted,state,node,attempt,placed,started,finished,cpus,"
    "expected,deadline,completion,slowdown,deadline_met"
).split(",")


def make_folder(
    path: Path,
    *,
    policies: tuple[str, ...] = ("gossip", "omniscient"),
    seeds: tuple[int, ...] = (1, 2),
    mode: str = "sim",
    nodes: int = 8,
    samples: int = 40,
    tasks: int = 60,
    complete: bool = True,
    completed: bool = True,
    slow: float = 1.0,
    problems: dict[str, dict[str, list[str]]] | None = None,
) -> Path:
    """Write all six results files for a small fake run (crash, partition..heal, loss)."""
    path.mkdir(parents=True, exist_ok=True)
    duration = 60.0
    rng = random.Random(7)
    (path / "run.json").write_text(json.dumps({
        "scenario": "crash-and-split", "description": "A crash, then a partition.",
        "mode": mode, "seeds": list(seeds), "policies": list(policies),
        "code_version": "abc1234", "started": "2024-05-01T12:30:00",
        "wall_seconds": 12.5, "complete": complete,
        "fault_mechanisms": {"crash": "SIGKILL", "partition": "nftables input drop in namespaces"},
        "nodes": nodes, "duration": duration,
    }))
    metrics = {}
    for i, p in enumerate(policies):
        metrics[p] = {
            "tasks": tasks, "accepted": tasks, "completed": tasks - i, "completion_rate": 0.98,
            "lost": i, "duplicates": 0, "mean_completion": 4.2 * slow, "p50_completion": 3.9 * slow,
            "p99_completion": 11.0 * slow, "mean_slowdown": 1.3, "deadline_misses": 0.05,
            "mean_utilization": 0.61, "utilization_spread": 0.12, "p50_submit_to_placed": 0.02,
            "p99_submit_to_placed": 0.4, "messages_per_node_s": 14.2,
            "detection_time_mean": 2.0 * slow, "detection_time_max": 3.1,
            "recovery_time_mean": None, "recovery_time_max": None, "false_failures": 0,
        }
    checks = problems if problems is not None else {
        p: {c: [] for c in ("lost", "duplicate_results", "unmatched_results", "overcommit",
                            "stuck")} for p in policies
    }
    (path / "metrics.json").write_text(json.dumps({"policies": metrics, "checks": checks}))

    with (path / "tasks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TASK_COLS)
        for p in policies:
            for s in seeds:
                for k in range(tasks):
                    sub = rng.uniform(0, 40)
                    done = completed and k % 10 != 9
                    comp = rng.uniform(1, 12) * slow if done else None
                    w.writerow([p, s, f"t{k}", f"{sub:.3f}", 1, "done" if done else "lost",
                                f"n{k % nodes}", 1, f"{sub + 0.1:.3f}", f"{sub + 0.2:.3f}",
                                cell(None if comp is None else sub + comp), 1, 5, "",
                                cell(comp), cell(None if comp is None else comp / 5),
                                1 if done else 0])
    with (path / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "seed", "t", "kind", "node", "subject", "detail"])
        for p in policies:
            for s in seeds:
                w.writerows([
                    [p, s, 10.0, "fault", "n3", "crash", "n3"],
                    [p, s, 11.5, "member", "n1", "n3", "dead"],
                    [p, s, 12.0, "task", "n2", "t4", "running"],
                    [p, s, 20.0, "fault", "", "partition", "groups 4|4"],
                    [p, s, 35.0, "fault", "", "heal", ""],
                    [p, s, 40.0, "fault", "n3", "restart", "n3"],
                    [p, s, 45.0, "fault", "", "loss", "rate 0.4"],
                    [p, s, 50.0, "fault", "n5", "pause", "n5"],
                    [p, s, 55.0, "fault", "n5", "resume", "n5"],
                ])
    times = np.linspace(0, duration, samples)
    with (path / "timeseries.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "seed", "t", "live_members", "in_flight", "task_utilization",
                    "total_utilization"])
        for j, p in enumerate(policies):
            for s in seeds:
                for t in times:
                    live = nodes - (1 if 10 <= t < 40 else 0)
                    task = 0.4 + 0.2 * np.sin(t / 7 + j)
                    w.writerow([p, s, f"{t:.2f}", live, int(10 + 5 * np.cos(t / 5)),
                                f"{task:.3f}", f"{min(1, task + 0.2):.3f}"])
    write_nodeload(path / "nodeload.csv", policies, seeds, nodes, times)
    return path


def write_nodeload(path: Path, policies, seeds, nodes: int, times: np.ndarray) -> None:
    """Per-node load rows; the crashed node n3 has no samples while it is down."""
    with path.open("w", newline="") as f:
        f.write("policy,seed,t,node,load\n")
        for j, p in enumerate(policies):
            for s in seeds:
                for t in times:
                    ts = f"{t:.2f}"
                    f.writelines(
                        f"{p},{s},{ts},n{n},{(0.5 + 0.4 * np.sin(n / 9 + t / 11 + j)):.3f}\n"
                        for n in range(nodes) if not (n == 3 and 10 <= t < 40)
                    )


def cell(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_has_policies_checks_faults_and_plots(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run", problems={
        "gossip": {"lost": [], "overcommit": [f"n{i} over by 0.5 cpu at t=3" for i in range(7)]},
        "omniscient": {"lost": [], "stuck": []},
    })
    md_path = write_report(folder)
    assert md_path == folder / "report.md"
    md = md_path.read_text()
    assert md.startswith("# crash-and-split · sim · seeds 1, 2 · 2024-05-01 12:30 · code abc1234")
    assert "INCOMPLETE" not in md
    assert "gossip" in md and OMNISCIENT_LABEL in md
    assert "| nftables input drop in namespaces |" in md
    assert "**FAIL** (7)" in md and "n4 over by 0.5 cpu" in md and "n5 over by" not in md
    assert "… and 2 more" in md
    assert "| omniscient (ideal baseline, sim only) | PASS |" in md
    assert "groups 4\\|4" in md  # a pipe in a cell must not split the table
    assert "| mean completion time [s] | 4.20 | 4.20 |" in md
    assert "| recovery time, mean [s] | – | – |" in md
    for png in PNGS:
        assert f"]({png})" in md
        assert png_size(folder / png) == (1200, 600)


def test_headline_table_lists_every_policy(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run", policies=("gossip", "random", "omniscient"))
    raw = json.loads((folder / "metrics.json").read_text())
    for i, values in enumerate(raw["policies"].values()):
        values.update(runs=70 + i, new_thing=0.25, mean_completion=float("nan"))
    (folder / "metrics.json").write_text(json.dumps(raw))  # NaN as Python's json writes it
    table = headline_table(folder)
    assert "| task runs started | 70 | 71 | 72 |" in table
    assert "| new thing | 0.250 | 0.250 | 0.250 |" in table
    assert "| mean completion time [s] | – | – | – |" in table
    header = table.splitlines()[0]
    assert header == f"| metric | gossip | random | {OMNISCIENT_LABEL} |"
    assert "| completion rate [%] | 98.0 | 98.0 | 98.0 |" in table
    assert "| checks | PASS | PASS | PASS |" in table


def test_incomplete_run_has_banner_at_top(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run", complete=False)
    md = write_report(folder).read_text()
    assert "INCOMPLETE" in "\n".join(md.splitlines()[:4])


def test_no_completed_tasks_and_one_policy(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run", policies=("gossip",), seeds=(3,), completed=False)
    md = write_report(folder).read_text()
    assert "| gossip | 0 | – |" in md
    for png in PNGS:
        assert png_size(folder / png) == (1200, 600)


def test_header_only_csvs_and_many_policies_still_report(tmp_path: Path) -> None:
    policies = ("a", "b", "c", "d", "e", "omniscient")
    folder = make_folder(tmp_path / "run", policies=policies, seeds=(1,))
    for name in ("timeseries.csv", "nodeload.csv", "events.csv"):
        header = (folder / name).read_text().splitlines()[0]
        (folder / name).write_text(header + "\n")
    md = write_report(folder).read_text()
    assert "No faults were injected." in md
    for png in PNGS:
        assert png_size(folder / png) == (1200, 600)


def test_fault_marks_pair_spans_and_keep_instants() -> None:
    def f(t: float, subject: str, node: str = "", detail: str = "") -> Fault:
        return Fault(t, subject, node, detail, "gossip", 1)

    marks = fault_marks([f(5, "crash", "n1"), f(10, "partition", detail="groups 2|2"),
                         f(12, "pause", "n2"), f(20, "heal"), f(30, "resume", "n2"),
                         f(40, "partition", detail="groups 3|1")], t_end=50)
    got = [(m.start, m.end, m.kind, m.label) for m in marks]
    assert got == [
        (5, None, "crash", "crash n1"),
        (10, 20, "partition", "partition groups 2|2"),
        (12, 30, "pause", "pause n2"),
        (40, 50, "partition", "partition groups 3|1 (not healed)"),
    ]


def test_missing_file_is_named(tmp_path: Path) -> None:
    for name in ("run.json", "metrics.json", "tasks.csv", "events.csv", "timeseries.csv",
                 "nodeload.csv"):
        folder = make_folder(tmp_path / name)
        (folder / name).unlink()
        with pytest.raises(ReportError, match=name.replace(".", r"\.") + ": missing"):
            write_report(folder)
        assert not (folder / "report.md").exists()


def test_bad_header_is_named(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run")
    text = (folder / "timeseries.csv").read_text().replace("in_flight", "inflight", 1)
    (folder / "timeseries.csv").write_text(text)
    with pytest.raises(ReportError, match=r"timeseries\.csv: bad header.*in_flight"):
        write_report(folder)


def test_non_numeric_cell_is_named_with_line(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run")
    lines = (folder / "tasks.csv").read_text().splitlines()
    cells = lines[4].split(",")
    cells[TASK_COLS.index("completion")] = "soon"
    lines[4] = ",".join(cells)
    (folder / "tasks.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"tasks\.csv line 5, column 'completion'.*'soon'"):
        write_report(folder)


def test_malformed_json_is_named(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "run")
    (folder / "metrics.json").write_text('{"policies": {"gossip": {"lost": "many"}}}')
    with pytest.raises(ReportError, match=r"metrics\.json: policies\.gossip\.lost"):
        headline_table(folder)
    (folder / "run.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"run\.json: not valid JSON"):
        headline_table(folder)


def test_compare_sim_and_local_has_fidelity(tmp_path: Path) -> None:
    sim = make_folder(tmp_path / "sim-run", policies=("gossip", "omniscient"), mode="sim")
    local = make_folder(tmp_path / "local-run", policies=("gossip",), mode="local", slow=1.5)
    out = compare([sim, local])
    assert "| policy | metric | crash-and-split (sim) · sim-run | crash-and-split (local) · " \
           "local-run |" in out
    assert "| **gossip** | tasks | 60 | 60 |" in out
    assert "omniscient" not in out.split("## Completion-time")[0].split("## Metrics")[1]
    assert "| run | policy | completed | p10 | p25 | p50 | p75 | p90 | p95 | p99 |" in out
    fid = [ln for ln in out.splitlines() if ln.startswith("- **fidelity**")]
    assert fid == [
        "- **fidelity** local/sim, local-run vs sim-run, gossip: detection time mean ×1.50, "
        "mean completion ×1.50, p50 completion ×1.50, p99 completion ×1.50"
    ]
    same_mode = compare([sim, sim])
    assert "fidelity" not in same_mode


def test_heatmap_of_5000_nodes_renders_quickly(tmp_path: Path) -> None:
    nodes, samples = 5000, 600
    t = np.linspace(0, 600, samples)
    load = (0.5 + 0.4 * np.sin(np.arange(nodes)[:, None] / 300 + t[None, :] / 60)).astype(
        np.float32)
    load[100:140, 200:300] = np.nan
    panel = HeatPanel("gossip", [f"n{i}" for i in range(nodes)], t, load)
    marks = {"gossip": [Mark(100, None, "crash", "crash n100"),
                        Mark(300, 400, "partition", "partition groups 2500|2500")]}
    start = time.perf_counter()
    plot_load_heatmap(tmp_path / "heat.png", "big", 1, [panel], marks)
    assert time.perf_counter() - start < 5
    assert png_size(tmp_path / "heat.png") == (1200, 600)


def test_report_with_5000_nodes_end_to_end(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "big", policies=("gossip",), seeds=(1,), nodes=5000,
                         samples=30, tasks=20)
    start = time.perf_counter()
    write_report(folder)
    assert time.perf_counter() - start < 5
    assert png_size(folder / "load_heatmap.png") == (1200, 600)
