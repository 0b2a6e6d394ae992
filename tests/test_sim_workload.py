"""Simulated workload: background replay from real traces, contention, and SimNode hosting."""

from __future__ import annotations

import gzip
import math
import random
import time

import pytest

from agent.execution import StartTask, StopTask, TaskExit
from agent.tasks import TaskSpec, TaskState
from gossip.effects import Outgoing
from gossip.messages import Message
from scenarios.sim import Simulator
from scenarios.sim.background import (
    BackgroundTrace,
    assign_traces,
    load_traces,
    resolve_traces,
    trained_digests,
)
from scenarios.sim.simulator import SimulationError
from scenarios.sim.toys import Recorder
from scenarios.sim.workload import SimExecutor, SimNode, on_core

DATA = "gcd-vms"  # the shipped bundle (scenarios/traces/): these tests run in any clone


def _start(task_id: str, cpus: float, expected: float, timeout: float = 0.0,
           attempt: int = 1) -> StartTask:  # fmt: skip
    return StartTask(task_id, attempt, TaskSpec(("sim",), cpus=cpus, expected=expected,
                                                timeout=timeout))  # fmt: skip


def _ends(ex: SimExecutor) -> list[tuple[str, int, TaskState, float]]:
    return [(e.exit.task_id, e.exit.attempt, e.exit.state, e.ended) for e in ex.ended]


# ------------------------------------------------------------------ background


def test_background_is_piecewise_constant_loops_and_shifts():
    bg = BackgroundTrace([0.1, 0.5, 0.3], step=10.0)
    assert [bg.load(t) for t in (0, 9.99, 10, 19, 20, 29.5)] == [0.1, 0.1, 0.5, 0.5, 0.3, 0.3]
    assert bg.load(30) == 0.1 and bg.load(30_000 + 15) == bg.load(15)  # loops
    assert bg.next_change(0) == 10 and bg.next_change(10) == 20 and bg.next_change(25) == 30
    shifted = BackgroundTrace([0.1, 0.5, 0.3], step=10.0, offset=4.0)
    for t in (0.0, 5.0, 5.9, 6.0, 17.0, 123.4):
        assert shifted.load(t) == bg.load(t + 4.0)
    assert shifted.next_change(0) == 6.0
    # equal consecutive samples are not a change; a constant trace never changes
    assert BackgroundTrace([0.2, 0.2, 0.7], step=1.0).next_change(0.5) == 2.0
    assert BackgroundTrace.constant(0.4).next_change(0) == math.inf
    assert BackgroundTrace([1.7, -0.2]).values == (1.0, 0.0)  # clipped to a fraction


def test_next_change_lands_exactly_on_a_new_value_with_awkward_floats():
    bg = BackgroundTrace([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], step=0.1, offset=0.3)
    t = 0.0
    for _ in range(200):
        nt = bg.next_change(t)
        assert nt > t and bg.load(nt) != bg.load(t)
        assert bg.load(math.nextafter(nt, -math.inf)) == bg.load(t)
        t = nt


def test_background_replay_matches_the_trace_file():
    # the bundle's text read independently of the loader: line 9 = series 8 after the comment
    text = gzip.decompress(resolve_traces(DATA).read_bytes()).decode()
    name, tokens = text.splitlines()[8].split("\t")
    raw = [float(tok) for tok in tokens.split(" ")]
    series = next(s for s in load_traces(DATA) if s.name == name)
    bg = BackgroundTrace.from_series(series, step=60.0)
    assert len(bg) == len(raw) == 288
    for k, v in enumerate(raw):
        assert bg.load(k * 60.0) == v / 100.0
        assert bg.load(k * 60.0 + 59.0) == v / 100.0
        assert bg.load(bg.period + k * 60.0 + 30.0) == v / 100.0  # second lap


def test_assign_traces_is_deterministic_unseen_and_fast():
    a = assign_traces(DATA, 50, seed=3, step=60.0)
    trained = trained_digests()
    by_name = {s.name: s for s in load_traces(DATA)}
    assert all(by_name[t.name].digest not in trained for t in a)
    assert len({t.name for t in a}) == 50  # distinct machines while the pool lasts
    assert all(0 <= t.offset < t.period and t.step == 60.0 for t in a)
    started = time.perf_counter()
    b = assign_traces(DATA, 50, seed=3, step=60.0)
    assert time.perf_counter() - started < 0.5  # parsed directory and digests are cached
    assert [(t.name, t.offset) for t in a] == [(t.name, t.offset) for t in b]
    c = assign_traces(DATA, 50, seed=4, step=60.0)
    assert [t.name for t in a] != [t.name for t in c]
    unseen = sum(s.digest not in trained for s in load_traces(DATA))
    assert unseen == len(load_traces(DATA)) == 96  # the bundle holds unseen machines only
    many = assign_traces(DATA, unseen + 5, seed=3)  # more nodes than machines: reused
    assert len(many) == unseen + 5 and len({t.name for t in many}) == unseen
    every = assign_traces(DATA, 5, seed=3, exclude_trained=False)
    assert len(every) == 5


# ------------------------------------------------------------------ executor


def test_contention_hand_computed_with_background_step_change():
    # 4 CPUs; background 25 % on [0, 100), 75 % on [100, 200), then looping.
    bg = BackgroundTrace([0.25, 0.75], step=100.0)
    ex = SimExecutor(4, bg)
    ex.start(0.0, _start("a", cpus=2, expected=60))  # 120 cpu-s = 60 s at full speed
    ex.start(0.0, _start("b", cpus=2, expected=200))  # 400 cpu-s = 200 s at full speed
    # [0, 80): available 3 < demand 4 -> speed 0.75; a is done when 0.75 t = 60 -> t = 80
    assert ex.speed() == 0.75 and ex.next_event() == 80.0
    assert ex.load(50.0) == 1.0
    assert ex.advance(79.0) == []
    assert ex.advance(80.0) == [TaskExit("a", 1, TaskState.SUCCEEDED)]
    # b: 60 s of progress at t=80; speed 1 until 100 (80); speed 0.5 on [100, 200) (130);
    # speed 1 again from 200: the remaining 70 s end it at 270
    assert ex.speed() == 1.0 and ex.next_event() == 100.0
    assert ex.load(90.0) == 0.25 + 2 / 4
    assert ex.advance(150.0) == [] and ex.speed() == 0.5 and ex.load(150.0) == 1.0
    assert ex.next_event() == 200.0
    assert ex.advance(269.9) == [] and ex.next_event() == 270.0
    assert ex.advance(300.0) == [TaskExit("b", 1, TaskState.SUCCEEDED)]
    assert _ends(ex) == [("a", 1, TaskState.SUCCEEDED, 80.0), ("b", 1, TaskState.SUCCEEDED, 270.0)]
    assert ex.running() == [] and ex.next_event() == math.inf and ex.load(300.0) == 0.75


def test_speed_floor_and_work_override():
    ex = SimExecutor(2, BackgroundTrace.constant(1.0), min_speed=0.05)
    ex.start(0.0, _start("x", cpus=1, expected=1))
    assert ex.speed() == 0.05 and ex.next_event() == 20.0  # no CPU left: crawls, never stalls
    ex2 = SimExecutor(2, work_of=lambda spec: 1.5 * spec.cpus * spec.expected)
    ex2.start(10.0, _start("y", cpus=2, expected=40))
    assert ex2.advance(100.0) == [TaskExit("y", 1, TaskState.SUCCEEDED)]
    assert ex2.ended[0].ended == 70.0


def _drive(poll: list[float], seed: int) -> list:
    """A random workload on a noisy background, polled at the given extra times."""
    rng = random.Random(seed)
    bg = BackgroundTrace([rng.uniform(0.0, 0.9) for _ in range(37)], step=7.3, offset=2.9)
    ex = SimExecutor(8, bg)
    cmds: list[tuple[float, object]] = []
    t = 0.0
    for i in range(60):
        t += rng.expovariate(1 / 4.0)
        timeout = rng.choice([0.0, 0.0, 30.0])
        cmds.append((t, _start(f"t{i}", rng.choice([0.5, 1, 2, 3]), rng.uniform(1, 40), timeout)))
        if rng.random() < 0.2:
            cmds.append((t + rng.uniform(0, 20), StopTask(f"t{i}", 1)))
    events = sorted([(at, 0, c) for at, c in cmds] + [(p, 1, None) for p in poll],
                    key=lambda e: (e[0], e[1]))  # fmt: skip
    got = []
    for at, _, c in events:
        if c is None:
            got += ex.advance(at)
        else:
            ex.apply(at, c)
    got += ex.advance(1e4)
    return [(e.exit, e.started, e.ended) for e in ex.ended], got


def test_results_do_not_depend_on_how_often_advance_is_called():
    never, _ = _drive([], seed=5)
    often, got_often = _drive([i * 0.37 for i in range(1000)], seed=5)
    rng = random.Random(9)
    odd, got_odd = _drive(sorted(rng.uniform(0, 400) for _ in range(300)), seed=5)
    assert never == often == odd  # bit-identical end times
    assert got_often == got_odd == [e for e, _, _ in never]
    states = {e.state for e, _, _ in never}
    assert states == {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED}


def test_timeout_and_stop():
    ex = SimExecutor(4)
    ex.start(0.0, _start("slow", cpus=1, expected=100, timeout=50))
    ex.start(0.0, _start("quick", cpus=1, expected=50, timeout=50))  # done exactly at timeout
    ex.start(0.0, _start("victim", cpus=1, expected=100))
    ex.stop(10.0, "victim", 1)
    ex.stop(10.0, "victim", 1)  # already stopped: no second exit
    ex.stop(10.0, "unknown", 1)
    ex.stop(10.0, "slow", 2)  # another attempt
    assert ex.advance(10.0) == [TaskExit("victim", 1, TaskState.CANCELLED, -15, "stopped")]
    assert ex.advance(60.0) == [
        TaskExit("quick", 1, TaskState.SUCCEEDED),
        TaskExit("slow", 1, TaskState.FAILED, -9, "timed out after 50 s"),
    ]
    assert [e.ended for e in ex.ended] == [10.0, 50.0, 50.0]
    with pytest.raises(ValueError):
        ex.advance(5.0)  # time never goes backwards


def test_duplicate_start_is_ignored_and_restart_of_same_key_is_new():
    ex = SimExecutor(1)
    ex.start(0.0, _start("a", cpus=1, expected=10))
    ex.start(5.0, _start("a", cpus=1, expected=10))
    assert ex.advance(10.0) == [TaskExit("a", 1, TaskState.SUCCEEDED)]
    ex.start(10.0, _start("a", cpus=1, expected=3))
    assert ex.advance(20.0) == [TaskExit("a", 1, TaskState.SUCCEEDED)]
    assert [e.ended for e in ex.ended] == [10.0, 13.0]


# ------------------------------------------------------------------ SimNode on the Simulator


class FakeCore:
    """Starts a 1-CPU task per message received; records exits and load samples."""

    def __init__(self, tick_every: float = 0.0) -> None:
        self.exits: list[tuple[float, TaskExit]] = []
        self.loads: list[tuple[float, float]] = []
        self.tasks_loads: list[float | None] = []
        self.ticks: list[float] = []
        self.tick_every = tick_every
        self.next = tick_every if tick_every else math.inf
        self.n = 0

    def on_message(self, now: float, msg: Message) -> list[StartTask]:
        return self.queue(now)

    def queue(self, now: float, expected: float = 30.0) -> list[StartTask]:
        self.n += 1
        return [_start(f"job{self.n}", cpus=1, expected=expected)]

    def on_tick(self, now: float) -> list[Outgoing]:
        self.ticks.append(now)
        self.next = now + self.tick_every
        return []

    def next_wakeup(self) -> float:
        return self.next

    def on_task_exit(self, now: float, exit: TaskExit) -> list[Outgoing]:
        self.exits.append((now, exit))
        return []

    def observe_load(self, now: float, load: float, tasks_load: float | None = None) -> None:
        self.loads.append((now, load))
        self.tasks_loads.append(tasks_load)


def _host(sim: Simulator, core: FakeCore, bg: BackgroundTrace, step: float = 10.0) -> SimNode:
    node = SimNode(core, SimExecutor(2, bg), sample_step=step)
    sim.add_node("a", node)
    sim.add_node("b", Recorder("b"))
    return node


def test_simnode_starts_on_message_reports_exits_and_samples_load():
    sim = Simulator(1)
    core = FakeCore(tick_every=25.0)
    node = _host(sim, core, BackgroundTrace([0.0, 0.5], step=100.0))
    sim.schedule(5.0, lambda s: s.call("b", lambda c, now: c.ping("a")))
    sim.run_until(200.0)
    arrived = node.executor.ended[0].started
    assert 5.0 < arrived < 5.01  # network latency
    # alone on 2 CPUs, bg 0 until 100: 30 s of work at full speed
    assert core.exits == [(arrived + 30.0, TaskExit("job1", 1, TaskState.SUCCEEDED))]
    assert [t for t, _ in core.loads] == [10.0 * k for k in range(21)]
    loads = dict(core.loads)
    assert loads[0.0] == 0.0 and loads[10.0] == 0.5 and loads[40.0] == 0.0
    assert loads[110.0] == 0.5  # background only
    assert core.ticks == [25.0 * k for k in range(1, 9)]
    assert node.executor.running() == []


def test_simnode_scenario_calls_through_on_core_start_runs_at_once_plain_ones_are_refused():
    sim = Simulator(2)
    core = FakeCore()
    node = _host(sim, core, BackgroundTrace.constant(0.0))
    sim.run_until(3.0)
    sim.call("a", on_core(lambda c, now: c.queue(now, expected=10.0)))
    assert node.executor.running() == [("job1", 1)]  # started within the call
    with pytest.raises(SimulationError, match="StartTask is not the network's"):
        sim.call("a", lambda n, now: n.core.queue(now, expected=20.0))  # past the host
    sim.call("a", on_core(lambda c, now: c.queue(now, expected=20.0)))
    assert node.executor.running() == [("job1", 1), ("job3", 1)]
    sim.run_until(100.0)
    assert [(t, e.task_id) for t, e in core.exits] == [(13.0, "job1"), (23.0, "job3")]


def test_crashed_node_tasks_vanish_silently():
    sim = Simulator(3)
    core = FakeCore(tick_every=5.0)
    node = _host(sim, core, BackgroundTrace.constant(0.25))
    sim.call("a", on_core(lambda c, now: c.queue(now)))
    sim.run_until(12.0)
    sim.crash("a")
    seen = (len(core.loads), len(core.ticks))
    sim.run_until(500.0)
    assert core.exits == [] and (len(core.loads), len(core.ticks)) == seen
    assert sim.metrics().now == 500.0 and node.executor.ended == []


def test_simnode_runs_are_deterministic():
    def run() -> tuple:
        sim = Simulator(7)
        core = FakeCore(tick_every=3.0)
        _host(sim, core, BackgroundTrace([0.2, 0.9, 0.6], step=13.0, offset=4.0), step=2.5)
        for i in range(20):
            sim.schedule(i * 4.1, lambda s: s.call("b", lambda c, now: c.ping("a")))
        sim.run_until(400.0)
        return sim.fingerprint(), core.exits, core.loads

    assert run() == run()


def test_tasks_load_is_what_contended_tasks_really_use() -> None:
    # 4 cpus, background 50 %: 2 cpus left; two 2-cpu tasks share them at speed 0.5
    ex = SimExecutor(4.0, BackgroundTrace.constant(0.5))
    for i in range(2):
        ex.start(0.0, StartTask(f"t{i}", 1, TaskSpec(argv=("x",), cpus=2.0, expected=10.0)))
    assert ex.load(1.0) == 1.0  # saturated: the sample alone cannot tell background from tasks
    assert abs(ex.tasks_load(1.0) - 0.5) < 1e-12  # 2 of 4 cpus really used by the tasks
    assert abs(ex.load(1.0) - ex.tasks_load(1.0) - 0.5) < 1e-12  # = the true background
