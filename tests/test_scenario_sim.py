"""Sim mode end to end: a scenario run is reproducible to the byte (in another process and hash
seed too), seeds matter, the omniscient baseline is sound and no worse than the protocol, a
reduced churn scenario passes every checker, and an interrupted run is marked incomplete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_tables import FAST_SWIM_TABLE, FAST_TABLES

from scenarios import checkers, metrics, omniscient, results, run_sim, runner, spec
from scenarios.cli import SHIPPED
from scenarios.observation import Observation
from scenarios.spec import Scenario

REPO = Path(__file__).resolve().parents[1]
SMOKE = SHIPPED / "smoke.toml"
DATA_FILES = ("metrics.json", "tasks.csv", "events.csv", "timeseries.csv", "nodeload.csv")

CHURN_SMALL = """\
# churn, reduced: 12 nodes, 40 s, three named nodes crash and restart after 5 s
[scenario]
name = "churn-small"
duration = 40
drain = 60
seeds = [1]
policies = ["predictive"]
sample_interval = 1

[cluster]
nodes = 12

[[cluster.class]]
cpus = 4
memory = "8GiB"

""" + FAST_TABLES + """
[background]
traces = "gcd-vms"
step = 10
warmup = 24

[workload]
utilization = 0.6
cpus = [1, 2]
duration = { min = 3, max = 10 }

[[faults]]
at = 15
action = "crash"
nodes = ["n1", "n5", "n9"]
restart = 1.0
restart_after = [5, 5]
"""


@pytest.fixture(scope="module")
def smoke() -> Scenario:
    return spec.load(SMOKE)


@pytest.fixture(scope="module")
def smoke_runs(smoke: Scenario, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped smoke scenario (both its policies, seed 1) run twice, in this process."""
    a, b = tmp_path_factory.mktemp("smoke-a"), tmp_path_factory.mktemp("smoke-b")
    runner.run(smoke, "sim", a, progress=False)
    runner.run(smoke, "sim", b, progress=False)
    return a, b


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def assert_all_pass(found: dict[str, list[str]]) -> None:
    assert set(found) == set(checkers.CHECKERS)
    assert {k: v for k, v in found.items() if v} == {}


# ---------------------------------------------------------------------- reproducibility


def test_smoke_run_writes_a_sound_result(smoke_runs: tuple[Path, Path]) -> None:
    """Guard for the byte comparisons: the files hold a real run, not empty tables."""
    a, _ = smoke_runs
    doc = read_metrics(a)
    assert set(doc["policies"]) == {"predictive", "sparrow"}
    for policy, found in doc["checks"].items():
        assert_all_pass(found)
        m = doc["policies"][policy]
        assert m["tasks"] > 50 and m["accepted"] == m["tasks"]
        assert m["completed"] == m["accepted"] and m["lost"] == 0
        assert m["crashes_detected"] == 1  # n3 crashes at 15 s, restarts at 18 s
    rows = (a / "tasks.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(m["tasks"] for m in doc["policies"].values())
    events = (a / "events.csv").read_text()
    assert ",fault,n3,crash," in events and ",fault,n3,restart," in events
    info = json.loads((a / "run.json").read_text())
    assert info["complete"] is True and info["seeds"] == [1]
    assert "INCOMPLETE" not in (a / "report.md").read_text()


@pytest.mark.parametrize("name", DATA_FILES)
def test_smoke_twice_is_byte_identical(smoke_runs: tuple[Path, Path], name: str) -> None:
    a, b = smoke_runs
    assert (a / name).read_bytes() == (b / name).read_bytes()


def test_smoke_in_another_process_and_hash_seed_is_byte_identical(
        smoke_runs: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    """Set iteration order or str hashes must not leak into the results."""
    a, _ = smoke_runs
    out = tmp_path / "sub"
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "4242" if env.get("PYTHONHASHSEED") == "0" else "0"
    code = ("import sys; from pathlib import Path; from scenarios import runner, spec; "
            "runner.run(spec.load(sys.argv[1]), 'sim', Path(sys.argv[2]), progress=False)")
    proc = subprocess.run([sys.executable, "-c", code, str(SMOKE), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (a / name).read_bytes(), name


def test_another_seed_gives_other_tasks(smoke: Scenario, tmp_path: Path) -> None:
    folders = []
    for seed in (1, 2):
        obs = run_sim.run(smoke, "sparrow", seed)
        folder = tmp_path / f"seed{seed}"
        results.write(folder, {"complete": True}, smoke.text, [obs], smoke.sample_interval)
        folders.append(folder)
        assert_all_pass(checkers.check(obs))
    one, two = ((f / "tasks.csv").read_text() for f in folders)
    assert one != two
    assert one.splitlines()[0] == two.splitlines()[0]  # same columns
    assert ",sparrow,2,t0," not in one and "sparrow,2,t0," in two


# ---------------------------------------------------------------------- omniscient


def test_omniscient_baseline_sound_and_no_worse(smoke: Scenario,
                                                smoke_runs: tuple[Path, Path]) -> None:  # fmt: skip
    obs = omniscient.run(smoke, 1)
    assert obs.complete and not obs.has_membership
    assert_all_pass(checkers.check(obs))
    m = metrics.compute(obs)
    predictive = read_metrics(smoke_runs[0])["policies"]["predictive"]
    assert m["tasks"] == predictive["tasks"]  # the same arrivals as the protocol runs
    assert m["completed"] == m["accepted"] == m["tasks"]
    assert m["mean_completion"] <= predictive["mean_completion"]
    assert [f.event.action for f in obs.faults] == ["crash", "restart"]
    killed = [r for r in obs.runs if r.state == "killed"]
    assert all(r.node == "n3" and r.end == 15.0 for r in killed)
    assert m["tasks_recovered"] == len(killed)  # each killed run ran again elsewhere


def test_omniscient_is_deterministic(smoke: Scenario) -> None:
    a, b = omniscient.run(smoke, 1), omniscient.run(smoke, 1)
    assert metrics.compute(a) == metrics.compute(b)
    assert [(r.node, r.task, r.start) for r in a.runs] == [(r.node, r.task, r.start)
                                                          for r in b.runs]  # fmt: skip


# ---------------------------------------------------------------------- churn, reduced


def test_reduced_churn_passes_every_checker(tmp_path: Path) -> None:
    path = tmp_path / "churn-small.toml"
    path.write_text(CHURN_SMALL)
    sc = spec.load(path)
    obs = run_sim.run(sc, "predictive", 1)
    assert obs.complete
    assert_all_pass(checkers.check(obs))
    assert [(f.t, f.event.action, f.event.nodes) for f in obs.faults] == [
        (15.0, "crash", (1, 5, 9)), (20.0, "restart", (1,)), (20.0, "restart", (5,)),
        (20.0, "restart", (9,))]  # fmt: skip
    m = metrics.compute(obs)
    assert m["accepted"] == m["tasks"] > 30
    assert m["completed"] == m["accepted"]
    assert m["crashes_detected"] == 3 and m["crashes_undetected"] == 0
    assert 0 < m["detection_time_max"] < 5.0  # the nodes restart 5 s after the crash
    assert m["false_failures"] == 0
    live = [s.live_members for s in metrics.samples(obs, sc.sample_interval)]
    assert min(live) == 9 and live[0] == 12 and live[-1] == 12


# ---------------------------------------------------------------------- interrupted runs


class CountingStop:
    """A stop() that says stop after `after` calls."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.after


def test_run_sim_stop_gives_incomplete_observation(smoke: Scenario) -> None:
    stop = CountingStop(5)
    obs: Observation = run_sim.run(smoke, "sparrow", 1, stop=stop)
    assert not obs.complete
    assert obs.end == pytest.approx(5 * smoke.sample_interval)  # five steps were played
    assert obs.notes == [f"interrupted at t={obs.end:.1f} s"]
    assert stop.calls == 6
    # the part that ran is still judged: nothing is lost, tasks not done are "stuck"
    assert checkers.lost(obs) == []


def test_runner_writes_incomplete_run(smoke: Scenario, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    class Stop(runner.Stop):
        """runner's own Stop (signal handlers and all), tripping after a few polls."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __call__(self) -> bool:
            self.calls += 1
            return self.calls > 8 or super().__call__()

    monkeypatch.setattr(runner, "Stop", Stop)
    report = runner.run(smoke, "sim", tmp_path, policies=("sparrow",), progress=False)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["complete"] is False
    assert info["notes"] and info["notes"][0].startswith("sparrow seed 1: interrupted at t=")
    assert "INCOMPLETE" in report.read_text()


def test_incomplete_observation_alone_marks_the_run_incomplete(smoke: Scenario,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """Even when the runner was not stopped, one incomplete run makes the folder incomplete."""
    obs = run_sim.run(smoke, "sparrow", 1, stop=CountingStop(3))
    results.write(tmp_path, {"complete": True}, smoke.text, [obs], smoke.sample_interval)
    assert json.loads((tmp_path / "run.json").read_text())["complete"] is False


# ---------------------------------------------------------------------- targeted loss and delay

LOSS_THEN_DELAY = """\
[scenario]
duration = 20
drain = 5
policies = ["sparrow"]

[cluster]
nodes = 5

""" + FAST_SWIM_TABLE + """
[background]
traces = "none"

[workload]
rate = 0.5

[[faults]]
at = 5
action = "loss"
nodes = ["n1"]
rate = 1.0
"""


@pytest.mark.parametrize("then_delay", [False, True])
def test_delay_does_not_cancel_loss_on_the_same_node(tmp_path: Path, then_delay: bool) -> None:
    """n1 loses every message from 5 s on: every other node declares it failed, also when a
    delay on n1 comes after the loss (it used to replace the link's loss override)."""
    text = LOSS_THEN_DELAY + ('\n[[faults]]\nat = 5.5\naction = "delay"\nnodes = ["n1"]\n'
                              "seconds = 0.002\n" if then_delay else "")  # fmt: skip
    (tmp_path / "ld.toml").write_text(text)
    obs = run_sim.run(spec.load(tmp_path / "ld.toml"), "sparrow", 1)
    declared = {m.observer for m in obs.members if m.peer == "n1" and m.status == "failed"}
    assert declared == {"n0", "n2", "n3", "n4"}


class _FakeSim:
    """Records the link overrides `_applier` sets (both directions, as set_link does)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.links: dict[tuple[str, str], tuple[float | None, float | None]] = {}

    def set_link(self, a: str, b: str, latency: float | None = None,
                 loss: float | None = None) -> None:  # fmt: skip
        self.links[(a, b)] = self.links[(b, a)] = (latency, loss)


def test_targeted_loss_and_delay_combine_per_link() -> None:
    from scenarios.faults import FaultEvent
    from scenarios.sim.network import NetworkModel

    class Cluster:
        sim = _FakeSim()
        addrs = ["a0", "a1", "a2"]

    obs = Observation("p", 1, "sim", ["n0", "n1", "n2"], {}, 10.0)
    per_node: dict[str, dict[int, float]] = {"loss": {}, "delay": {}}
    base = NetworkModel().latency
    links = Cluster.sim.links

    def apply(action: str, node: int, value: float) -> None:
        e = FaultEvent(0.0, 0, action, (node,), value=value)
        run_sim._applier(Cluster, obs, e, per_node)(None)  # type: ignore[arg-type]

    apply("loss", 1, 0.3)
    apply("delay", 1, 0.05)
    assert links[("a1", "a0")] == (base + 0.05, 0.3) == links[("a1", "a2")]
    apply("loss", 2, 0.5)
    assert links[("a2", "a0")] == (None, 0.5)
    assert links[("a1", "a2")] == (base + 0.05, 0.5)  # the worse of its two ends
    apply("loss", 1, 0.0)  # n1's loss undone: n2's stays, and n1's delay
    assert links[("a1", "a0")] == (base + 0.05, None)
    assert links[("a1", "a2")] == (base + 0.05, 0.5)
    apply("delay", 1, 0.0)
    assert links[("a1", "a0")] == (None, None)
    assert len(obs.faults) == 5
