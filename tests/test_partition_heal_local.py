"""Issue 12's target for a partition that heals, with real agents in network namespaces: within
`reconnect_interval + 1 s` of the heal every node sees every other one alive, and no node is
declared failed afterwards by an observer that could reach it throughout (no flapping).

The partition is a real one (nftables drops on each receiver's INPUT hook), so this needs root
with `ip` and `nft` (CI runs as root); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scenarios import netns

# one namespaced network at a time on a machine: such tests take turns (tests/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("netns_turn")]

REPO = Path(__file__).resolve().parents[1]
NETNS_OK, NETNS_WHY = netns.available()
RECONNECT = 2.0  # shorter than the default 5 s: the test stays short, the target tight
# Default SWIM timings otherwise, as in the issue: a 15 s split lets every node declare the
# other side failed (5 nodes: suspicion lasts at most 7.2 s) before the heal.

SCENARIO = f"""
[scenario]
name = "partition-heal-short"
mode = "local"
duration = 33
drain = 1
policies = ["least-loaded"]
sample_interval = 1

[cluster]
nodes = 5

[[cluster.class]]
cpus = 2
memory = "2GiB"

[cluster.swim]
reconnect_interval = {RECONNECT!r}

[background]
traces = "none"

[workload]
rate = 0

[[faults]]
at = 3
action = "partition"
groups = [["n0", "n1", "n2"], ["n3", "n4"]]
duration = 15
"""
SIDE = {"n0": 0, "n1": 0, "n2": 0, "n3": 1, "n4": 1}


@pytest.mark.skipif(not NETNS_OK, reason=f"network namespaces need root, ip and nft: {NETNS_WHY}")
def test_a_healed_partition_remerges_within_reconnect_interval_without_flapping(
        tmp_path: Path) -> None:  # fmt: skip
    sc = tmp_path / "partition-heal-short.toml"
    sc.write_text(SCENARIO)
    assert tomllib.loads(SCENARIO)["cluster"]["swim"]["reconnect_interval"] == RECONNECT
    out = tmp_path / "out"
    env = dict(os.environ, AGORA_SCENARIO_STATE=str(tmp_path / "state"))
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "scenario", "run", str(sc), "--out", str(out),
         "--network", "namespaces", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stdout[-2000:] + done.stderr[-2000:]
    assert netns.leftovers() == []
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and "nftables" in run["fault_mechanisms"]["partition"]
    with (out / "events.csv").open() as f:
        rows = list(csv.DictReader(f))
    heal = next(float(r["t"]) for r in rows if r["kind"] == "fault" and r["subject"] == "heal")
    # the partition was real: each side declared the other failed before the heal
    cut = [r for r in rows if r["kind"] == "member" and r["detail"] == "failed"
           and float(r["t"]) < heal and SIDE[r["node"]] != SIDE[r["subject"]]]  # fmt: skip
    assert cut, "no failure declared across the partition: it did not take effect"
    m = json.loads((out / "metrics.json").read_text())["policies"]["least-loaded"]
    measured = (f"re-merge {m['remerge_time_max']} s (target <= {RECONNECT + 1:g} s), "
                f"{m['heal_flaps']} declarations about nodes that stayed reachable")
    assert m["heals_unmerged"] == 0, measured
    assert m["remerge_time_max"] <= RECONNECT + 1.0, measured
    assert m["heal_flaps"] == 0, measured
