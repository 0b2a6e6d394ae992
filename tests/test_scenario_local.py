"""Local mode end to end: real agent processes, a crash with a fast restart and a partition that
heals; and nothing left behind after Ctrl-C or after the runner itself is SIGKILLed.

The namespaced tests need root with `ip` and `nft` (CI runs as root); the loopback ones run
anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from scenario_tables import FAST_TABLES

from scenarios import netns

# one namespaced network at a time on a machine: such tests take turns (tests/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("netns_turn")]

REPO = Path(__file__).resolve().parents[1]
NETNS_OK, NETNS_WHY = netns.available()
needs_netns = pytest.mark.skipif(
    not NETNS_OK, reason=f"network namespaces need root, ip and nft (CI runs as root): {NETNS_WHY}"
)

SCENARIO = """
[scenario]
name = "local-faults"
mode = "local"
duration = 14
drain = 20
policies = ["predictive"]
sample_interval = 1

[cluster]
nodes = 5

[[cluster.class]]
cpus = 2
memory = "2GiB"

""" + FAST_TABLES + """
[background]
traces = "gcd-vms"
step = 5
warmup = 0

[workload]
utilization = 0.4
cpus = [1]
duration = { min = 1, max = 3 }

[[faults]]
at = 4
action = "crash"
nodes = ["n1"]
restart = 1.0
restart_after = [0.5, 0.5]

[[faults]]
at = 8
action = "partition"
groups = [["n0", "n1"], ["n2", "n3", "n4"]]
duration = 3
"""


def _agents_of(folder: Path) -> list[psutil.Process]:
    """Agent processes started from configs in `folder` (what a run must not leave behind)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "deploy.cli" in cmd and any(str(folder) in c for c in cmd):
            out.append(p)
    return out


def _run(tmp_path: Path, network: str, *extra: str, wait: bool = True) -> subprocess.Popen:
    sc = tmp_path / "local-faults.toml"
    sc.write_text(SCENARIO)
    env = dict(os.environ, AGORA_SCENARIO_STATE=str(tmp_path / "state"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "scenario", "run", str(sc), "--out",
         str(tmp_path / "out"), "--network", network, "--keep-logs", "--no-progress", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if wait:
        proc.wait(timeout=240)
    return proc


def _check_full_run(tmp_path: Path, proc: subprocess.Popen, network: str) -> None:
    out = tmp_path / "out"
    stdout, stderr = proc.communicate()
    assert proc.returncode in (0, 3), stdout[-2000:] + stderr[-2000:]  # 3: checkers found bugs
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["network"] == network
    assert set(run["fault_mechanisms"]) == {"crash", "restart", "partition", "heal"}
    if network == "namespaces":
        assert "nftables" in run["fault_mechanisms"]["partition"]
    else:
        assert "transport" in run["fault_mechanisms"]["partition"]
    doc = json.loads((out / "metrics.json").read_text())
    m, checks = doc["policies"]["predictive"], doc["checks"]["predictive"]
    assert m["accepted"] >= 8 and m["completed"] >= 0.8 * m["accepted"]
    # what must hold whatever else the run finds: no node ever ran more than it offers, and every
    # recorded result is a run that really ended that way, by the agents' own event logs
    assert checks["overcommit"] == [] and checks["unmatched_results"] == []
    assert m["runs"] >= m["completed"]
    tasks = (out / "tasks.csv").read_text().splitlines()
    assert len(tasks) == m["tasks"] + 1
    events = (out / "events.csv").read_text()
    assert ",fault,n1,crash," in events and ",fault,n1,restart," in events
    assert ",member," in events and ",task," in events
    for n in range(5):
        log = out / "agents" / "predictive-seed1" / f"n{n}.events.jsonl"
        assert '"ev": "start"' in log.read_text() or '"ev":"start"' in log.read_text()
    assert (out / "report.md").exists() and "INCOMPLETE" not in (out / "report.md").read_text()
    # resident memory: every agent sampled from start to end, n1's restart a new process
    rss = [line.split(",") for line in (out / "rss.csv").read_text().splitlines()[1:]]
    assert {r[3] for r in rss} == {f"n{n}" for n in range(5)}
    assert len({r[4] for r in rss if r[3] == "n1"}) == 2
    assert all(20 << 20 < int(r[5]) < 1 << 30 for r in rss)
    assert max(float(r[2]) for r in rss) >= 14 and 0 < m["rss_end_max"] < 1 << 30
    assert "## Resident memory" in (out / "report.md").read_text()
    assert (out / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _agents_of(tmp_path) == []
    if network == "namespaces":
        assert netns.leftovers() == []


@needs_netns
def test_local_mode_in_namespaces_with_crash_fast_restart_and_partition(tmp_path: Path) -> None:
    proc = _run(tmp_path, "namespaces")
    _check_full_run(tmp_path, proc, "namespaces")


def test_local_mode_on_loopback_with_crash_fast_restart_and_partition(tmp_path: Path) -> None:
    proc = _run(tmp_path, "loopback")
    _check_full_run(tmp_path, proc, "loopback")


def _wait_for_agents(tmp_path: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_agents_of(tmp_path)) < n:
        assert time.monotonic() < deadline, "agents did not start"
        time.sleep(0.2)
    time.sleep(3.0)  # into the run


@pytest.mark.parametrize("network", [
    pytest.param("namespaces", marks=needs_netns), "loopback"])  # fmt: skip
def test_ctrl_c_stops_everything_and_writes_a_partial_report(tmp_path: Path, network: str) -> None:
    proc = _run(tmp_path, network, wait=False)
    _wait_for_agents(tmp_path, 5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["complete"] is False
    assert "INCOMPLETE" in (tmp_path / "out" / "report.md").read_text()
    assert _agents_of(tmp_path) == []
    if network == "namespaces":
        assert netns.leftovers() == []


@pytest.mark.parametrize("network", [
    pytest.param("namespaces", marks=needs_netns), "loopback"])  # fmt: skip
def test_after_sigkill_of_the_runner_cleanup_removes_leftovers(tmp_path: Path,
                                                              network: str) -> None:
    proc = _run(tmp_path, network, wait=False)
    _wait_for_agents(tmp_path, 5)
    proc.kill()
    proc.communicate(timeout=30)
    assert len(_agents_of(tmp_path)) == 5  # a SIGKILLed runner cannot clean up...
    if network == "namespaces":
        assert netns.leftovers()
    env = dict(os.environ, AGORA_SCENARIO_STATE=str(tmp_path / "state"))
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "scenario", "cleanup"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "removed:" in out.stdout
    deadline = time.monotonic() + 10
    while _agents_of(tmp_path) and time.monotonic() < deadline:  # ...the next one does
        time.sleep(0.1)
    assert _agents_of(tmp_path) == []
    if network == "namespaces":
        assert netns.leftovers() == []
