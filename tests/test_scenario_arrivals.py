"""Arrivals: fixed by the seed (every policy sees the same tasks), a utilization target turns
into the offered CPU load it names, daily cycles and bursts shape the stream, and a CSV of tasks
is read strictly (errors name file:line)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scenarios.arrivals import Arrival, free_cpus, generate, mean_background
from scenarios.sim.background import BackgroundTrace
from scenarios.spec import Scenario, ScenarioError, parse


def scenario(workload: str, nodes: int = 10, duration: float = 200,
             source: str = "a.toml") -> Scenario:  # fmt: skip
    return parse(f"[scenario]\nduration = {duration}\n[cluster]\nnodes = {nodes}\n"
                 f"[workload]\n{workload}", source)  # fmt: skip


def offered(arrivals: list[Arrival], t0: float, t1: float) -> float:
    """CPU-seconds of work submitted per second of the window."""
    return sum(a.cpus * a.expected for a in arrivals if t0 <= a.t < t1) / (t1 - t0)


# ---------------------------------------------------------------------- determinism


def test_same_seed_same_arrivals_other_seed_other_arrivals() -> None:
    sc = scenario("rate = 2\ncpus = [1, 2, 4]\nduration = { min = 1, max = 9 }\n"
                  'memory = ["1GiB", "2GiB"]\n')  # fmt: skip
    a = generate(sc, 1, [4.0] * 10, None)
    assert a == generate(sc, 1, [4.0] * 10, None)
    b = generate(sc, 2, [4.0] * 10, None)
    assert [x.t for x in a] != [x.t for x in b]
    assert 300 < len(a) < 460  # ~ 2/s over [5, 200)
    assert [x.task_id for x in a] == [f"t{i}" for i in range(len(a))]
    assert all(a[i].t <= a[i + 1].t for i in range(len(a) - 1))
    assert all(5.0 <= x.t < 200 for x in a)  # default start = min(5, duration / 10)
    assert {x.cpus for x in a} == {1.0, 2.0, 4.0}
    assert {x.memory for x in a} == {1 << 30, 2 << 30}
    assert all(1 <= x.expected <= 9 and 0 <= x.via < 10 for x in a)
    assert all(x.deadline == pytest.approx(2.0 * x.expected) for x in a)  # default factor 2


def test_arrivals_stay_in_start_stop() -> None:
    sc = scenario("rate = 5\nstart = 50\nstop = 80\ndeadline_factor = 0\n")
    a = generate(sc, 3, [4.0] * 10, None)
    assert a and all(50 <= x.t < 80 for x in a)
    assert all(x.deadline == 0 for x in a)


# ---------------------------------------------------------------------- utilization


def test_utilization_target_gives_that_offered_load_without_background() -> None:
    """20 nodes x 4 CPUs at 0.5 target: ~40 CPU-seconds of work offered per second."""
    sc = scenario("utilization = 0.5\nstart = 0\ncpus = [1, 2]\n"
                  "duration = { min = 1, max = 10 }\n", nodes=20, duration=4000)  # fmt: skip
    for seed in (1, 2):
        a = generate(sc, seed, [4.0] * 20, None)
        load = offered(a, 0, 4000) / 80.0
        assert load == pytest.approx(0.5, rel=0.04), seed
        assert len(a) == pytest.approx(0.5 * 80 / (1.5 * 5.5) * 4000, rel=0.05)


def test_utilization_counts_only_cpus_left_by_the_background() -> None:
    """Background alternating 0 % / 50 % (mean 25 %) leaves 3 of every 4 CPUs for tasks."""
    traces = [BackgroundTrace([0.0, 0.5], step=50.0) for _ in range(10)]
    cpus = [4.0] * 5 + [8.0] * 5
    sc = scenario("utilization = 0.8\nstart = 0\ncpus = [2]\nduration = { min = 4, max = 4 }\n",
                  nodes=10, duration=4000)  # fmt: skip
    assert mean_background(traces[0], 0, 4000) == pytest.approx(0.25)
    assert free_cpus(sc, cpus, traces) == pytest.approx(60 * 0.75)
    assert free_cpus(sc, cpus, None) == 60.0
    a = generate(sc, 1, cpus, traces)
    assert offered(a, 0, 4000) == pytest.approx(0.8 * 45, rel=0.04)
    no_bg = generate(sc, 1, cpus, None)
    assert len(no_bg) / len(a) == pytest.approx(4 / 3, rel=0.05)


def test_mean_background_partial_steps() -> None:
    bg = BackgroundTrace([0.2, 0.6], step=10.0)
    assert mean_background(bg, 5, 15) == pytest.approx(0.4)
    assert mean_background(bg, 0, 5) == pytest.approx(0.2)
    assert mean_background(bg, 12, 12) == pytest.approx(0.6)  # empty window: the value there


# ---------------------------------------------------------------------- shapes


def test_daily_cycle_has_more_arrivals_in_the_high_half() -> None:
    """rate x (1 + 0.8 sin): the high half-period expects (1 + 1.6/pi) / (1 - 1.6/pi) ~ 3x."""
    sc = scenario('arrival = "daily"\nrate = 2\nstart = 0\ndaily_period = 1000\n'
                  "daily_amplitude = 0.8\n", duration=4000)  # fmt: skip
    a = generate(sc, 1, [4.0] * 10, None)
    high = sum(1 for x in a if (x.t % 1000) < 500)
    low = len(a) - high
    assert 2.3 < high / low < 3.9
    assert len(a) == pytest.approx(2 * 4000, rel=0.05)  # the mean rate is still `rate`


def test_poisson_has_no_cycle() -> None:
    sc = scenario("rate = 2\nstart = 0\ndaily_period = 1000\n", duration=4000)
    a = generate(sc, 1, [4.0] * 10, None)
    high = sum(1 for x in a if (x.t % 1000) < 500)
    assert high / (len(a) - high) == pytest.approx(1.0, abs=0.1)


def test_bursts_only() -> None:
    sc = scenario("[[workload.burst]]\nat = 20\ncount = 3\n[[workload.burst]]\nat = 10\n"
                  "count = 7\n")  # fmt: skip
    a = generate(sc, 1, [4.0] * 10, None)
    assert len(a) == 10
    assert [x.t for x in a] == pytest.approx([10 + 0.001 * k for k in range(7)]
                                             + [20 + 0.001 * k for k in range(3)])
    assert [x.task_id for x in a] == [f"t{i}" for i in range(10)]


def test_burst_adds_exactly_count_tasks_to_a_stream() -> None:
    """Bursts are drawn after the stream, so the stream's own arrivals are unchanged."""
    plain = scenario("rate = 1\n")
    bursty = scenario("rate = 1\n[[workload.burst]]\nat = 100\ncount = 25\n")
    a = generate(plain, 4, [4.0] * 10, None)
    b = generate(bursty, 4, [4.0] * 10, None)
    assert len(b) == len(a) + 25
    extra = sorted({x.t for x in b} - {x.t for x in a})
    assert extra == pytest.approx([100 + 0.001 * k for k in range(25)])


# ---------------------------------------------------------------------- CSV


def csv_scenario(tmp_path: Path, body: str, name: str = "tasks.csv") -> Scenario:
    (tmp_path / name).write_text(body, encoding="utf-8")
    return scenario(f'csv = "{name}"\ndeadline_factor = 3\n', nodes=4, duration=100,
                    source=str(tmp_path / "w.toml"))  # fmt: skip


def test_csv_workload(tmp_path: Path) -> None:
    sc = csv_scenario(tmp_path, "at,cpus,duration,memory,deadline\n"
                                "30,2,5,1GiB,\n"
                                "10.5,1,2,,60\n"
                                "20,0.5,8,2MiB,12\n")  # fmt: skip
    a = generate(sc, 1, [4.0] * 4, None)
    assert [(x.task_id, x.t, x.cpus, x.expected, x.memory, x.deadline) for x in a] == [
        ("t0", 10.5, 1.0, 2.0, 0, 60.0),
        ("t1", 20.0, 0.5, 8.0, 2 << 20, 12.0),
        ("t2", 30.0, 2.0, 5.0, 1 << 30, 15.0),  # empty deadline: factor x expected
    ]
    assert a == generate(sc, 1, [4.0] * 4, None)
    assert all(0 <= x.via < 4 for x in a)


def test_csv_bad_header(tmp_path: Path) -> None:
    sc = csv_scenario(tmp_path, "at,cores,duration\n1,2,3\n")
    with pytest.raises(ScenarioError) as ei:
        generate(sc, 1, [4.0] * 4, None)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / 'tasks.csv'}:1: columns must be at, cpus, duration")
    assert "missing ['cpus']" in msg and "unknown ['cores']" in msg


def test_csv_non_numeric_cell_names_its_line(tmp_path: Path) -> None:
    sc = csv_scenario(tmp_path, "at,cpus,duration\n1,2,3\n2,two,3\n")
    with pytest.raises(ScenarioError) as ei:
        generate(sc, 1, [4.0] * 4, None)
    assert str(ei.value) == f"{tmp_path / 'tasks.csv'}:3: cpus: not a number: 'two'"


@pytest.mark.parametrize(("row", "fragment"), [
    ("200,1,3", ":2: at: 200 is after the end of the run (100)"),
    ("1,0,3", ":2: cpus: 0 is not in (0, 4096]"),
    ("1,1,-3", ":2: duration: -3 is out of range"),
    ("1,1,inf", ":2: duration: inf is out of range"),
    ("1,1,", ":2: duration is empty"),
])  # fmt: skip
def test_csv_bad_values(tmp_path: Path, row: str, fragment: str) -> None:
    sc = csv_scenario(tmp_path, f"at,cpus,duration\n{row}\n")
    with pytest.raises(ScenarioError) as ei:
        generate(sc, 1, [4.0] * 4, None)
    assert str(ei.value) == f"{tmp_path / 'tasks.csv'}{fragment}"


def test_csv_missing_file(tmp_path: Path) -> None:
    sc = scenario('csv = "gone.csv"\n', source=str(tmp_path / "w.toml"))
    with pytest.raises(ScenarioError, match=r"gone\.csv: cannot read the workload CSV"):
        generate(sc, 1, [4.0] * 10, None)


def test_rate_math_sanity() -> None:
    """No NaN sneaks into times or sizes with a degenerate duration range."""
    sc = scenario("rate = 3\nduration = { min = 2, max = 2 }\n")
    a = generate(sc, 9, [1.0] * 10, None)
    assert a and all(math.isfinite(x.t) and x.expected == 2.0 for x in a)
