"""Resident memory of agents in local mode: the runner's sampling, the per-agent figures, the
rss.csv file, and the report's table and plot (the end-to-end local run is in
tests/test_scenario_local.py)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_scenario_report import make_folder, png_size

from scenarios import results
from scenarios.metrics import AgentMemory, agent_memory, compute, memory_metrics
from scenarios.observation import Observation, RssSample
from scenarios.report import ReportError, write_report
from scenarios.run_local import _Cluster

MiB = 1 << 20

# n0 grows from 40 to 46 MiB; n1 is restarted at t=6 (pid 11 -> 12): its new life starts at
# 30 MiB and grows by 2; n2 has a single sample
SAMPLES = [
    RssSample(0.0, "n0", 10, 40 * MiB), RssSample(0.0, "n1", 11, 50 * MiB),
    RssSample(4.0, "n0", 10, 43 * MiB), RssSample(4.0, "n1", 11, 60 * MiB),
    RssSample(8.0, "n0", 10, 46 * MiB), RssSample(8.0, "n1", 12, 30 * MiB),
    RssSample(12.0, "n1", 12, 32 * MiB), RssSample(12.0, "n2", 13, 35 * MiB),
]  # fmt: skip


def test_agent_memory_per_agent_start_end_peak_and_growth_of_the_last_life():
    assert agent_memory(reversed(SAMPLES)) == [
        AgentMemory("n0", 40 * MiB, 46 * MiB, 46 * MiB, 6 * MiB, 0),
        AgentMemory("n1", 50 * MiB, 32 * MiB, 60 * MiB, 2 * MiB, 1),
        AgentMemory("n2", 35 * MiB, 35 * MiB, 35 * MiB, 0, 0),
    ]
    assert memory_metrics(SAMPLES) == {"rss_start_max": 50 * MiB, "rss_end_max": 46 * MiB,
                                       "rss_growth_max": 6 * MiB}  # fmt: skip
    assert memory_metrics([]) == {}


def test_agents_are_in_node_order_not_text_order():
    ss = [RssSample(0.0, f"n{i}", i, MiB) for i in (10, 2, 1)]
    assert [m.node for m in agent_memory(ss)] == ["n1", "n2", "n10"]


def _observation(rss: list[RssSample]) -> Observation:
    return Observation("predictive", 1, "local", ["n0", "n1", "n2"],
                       {f"n{i}": (2.0, 2 * MiB, 0) for i in range(3)}, 12.0, end=12.0, rss=rss)


def test_metrics_and_rss_csv_of_a_local_run(tmp_path: Path):
    obs = _observation(SAMPLES)
    assert compute(obs)["rss_growth_max"] == 6 * MiB
    assert "rss_growth_max" not in compute(_observation([]))  # sim runs have no such figure
    results.write(tmp_path, {"scenario": "x"}, "", [obs], 1.0)
    with (tmp_path / "rss.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(results.RSS_COLUMNS)
    assert rows[1:3] == [["predictive", "1", "0.0", "n0", "10", str(40 * MiB)],
                         ["predictive", "1", "0.0", "n1", "11", str(50 * MiB)]]  # fmt: skip
    assert len(rows) == 1 + len(SAMPLES)


def test_sim_runs_write_no_rss_csv(tmp_path: Path):
    results.write(tmp_path, {"scenario": "x"}, "", [_observation([])], 1.0)
    assert not (tmp_path / "rss.csv").exists()


def _write_rss(folder: Path, rows: list[tuple]) -> None:
    with (folder / "rss.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(results.RSS_COLUMNS)
        w.writerows(rows)


def test_report_has_a_memory_table_and_plot(tmp_path: Path):
    folder = make_folder(tmp_path / "run", policies=("predictive",), seeds=(1,), mode="local")
    _write_rss(folder, [("predictive", 1, s.t, s.node, s.pid, s.rss) for s in SAMPLES])
    md = write_report(folder).read_text()
    assert "## Resident memory" in md
    assert "| predictive | 1 | n0 | 40.0 | 46.0 | 46.0 | 6.0 | 0 |" in md
    assert "| predictive | 1 | n1 | 50.0 | 32.0 | 60.0 | 2.0 | 1 |" in md
    assert "](rss.png)" in md
    assert png_size(folder / "rss.png") == (1200, 600)


def test_report_without_rss_csv_has_no_memory_section(tmp_path: Path):
    folder = make_folder(tmp_path / "run")
    md = write_report(folder).read_text()
    assert "Resident memory" not in md and not (folder / "rss.png").exists()


def test_bad_rss_cell_is_named_with_its_line(tmp_path: Path):
    folder = make_folder(tmp_path / "run", policies=("predictive",), seeds=(1,))
    _write_rss(folder, [("predictive", 1, 0.0, "n0", 10, MiB), ("predictive", 1, 2.0, "n0", 10,
                                                                 "lots")])  # fmt: skip
    with pytest.raises(ReportError, match=r"rss.csv line 3, column 'rss'"):
        write_report(folder)


def test_runner_samples_the_resident_memory_of_each_live_agent_process():
    """`_Cluster.sample_rss` on real processes: one holding 64 MiB, one that has exited, one
    never started."""
    big = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(64 << 20); "
                            "b[::4096] = b'x' * len(b[::4096]); print(flush=True); "
                            "time.sleep(30)"], stdout=subprocess.PIPE)  # fmt: skip
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        big.stdout.readline()  # its memory is touched
        gone.wait()
        c = _Cluster.__new__(_Cluster)  # only the agents list is used
        c.agents = [SimpleNamespace(node_id="n0", proc=big), SimpleNamespace(node_id="n1",
                    proc=gone), SimpleNamespace(node_id="n2", proc=None)]  # fmt: skip
        (s,) = c.sample_rss(3.5)
        assert (s.t, s.node, s.pid) == (3.5, "n0", big.pid)
        assert s.rss >= 64 * MiB
    finally:
        big.kill()
        big.wait()


def test_growth_starts_once_the_process_has_started_up():
    """The soak's first run: a restarted agent sampled while still importing (22 MiB) showed a
    growth of 25.7 MiB though it ended at 47.6 MiB like the others."""
    ss = [RssSample(0.0, "n4", 7, 22 * MiB), RssSample(2.0, "n4", 7, 40 * MiB),
          RssSample(12.0, "n4", 7, 44 * MiB), RssSample(600.0, "n4", 7, 46 * MiB)]  # fmt: skip
    assert agent_memory(ss)[0].growth == 2 * MiB
