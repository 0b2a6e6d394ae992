"""Checkers and metrics on hand-made observations: each invariant checker must fail exactly
when its invariant is broken (a checker that never fails proves nothing), and each figure must
come out as computed by hand."""

from __future__ import annotations

import math
import time

import pytest

from scenarios import checkers, metrics
from scenarios.faults import FaultEvent
from scenarios.observation import (
    AppliedFault,
    Commit,
    MemberEvent,
    Observation,
    Record,
    Run,
    TaskOutcome,
)

NAN = math.nan


def obs_of(n: int = 4, cpus: float = 4.0, end: float = 100.0, **kw: object) -> Observation:
    nodes = [f"n{i}" for i in range(n)]
    return Observation("p", 1, "sim", nodes, {x: (cpus, 8 << 30, 0) for x in nodes}, 60.0,
                       end=end, **kw)  # type: ignore[arg-type]  # fmt: skip


def fault(t: float, action: str, *nodes: int,
          groups: tuple[tuple[int, ...], ...] = ()) -> AppliedFault:  # fmt: skip
    return AppliedFault(FaultEvent(t, 0, action, tuple(nodes), groups), t, "test")


def done(task: str, submitted: float, finished: float, *, node: str = "n0", attempt: int = 1,
         state: str = "succeeded", exit_code: int = 0, expected: float = 1.0,
         deadline: float = 0.0, cpus: float = 1.0) -> TaskOutcome:  # fmt: skip
    """An accepted task with a terminal record."""
    rec = Record(state, node, attempt, exit_code, submitted, submitted + 0.1, submitted + 0.2,
                 finished)  # fmt: skip
    return TaskOutcome(task, submitted, True, cpus, 0, expected, deadline, rec)


def ended_run(task: str, start: float, end: float, *, node: str = "n0", attempt: int = 1,
              cpus: float = 1.0, state: str = "succeeded", exit_code: int = 0) -> Run:  # fmt: skip
    return Run(node, task, attempt, start, cpus, 0, end=end, state=state, exit_code=exit_code)


def healthy() -> Observation:
    """Two tasks that ran and finished cleanly: every checker passes."""
    o = obs_of()
    o.tasks = [done("t0", 1, 4, node="n0"), done("t1", 2, 6, node="n1")]
    o.runs = [ended_run("t0", 1.2, 4, node="n0"), ended_run("t1", 2.2, 6, node="n1")]
    o.commits = [Commit(4, "n2", "t0", 1, "n0", "succeeded"),
                 Commit(6, "n3", "t1", 1, "n1", "succeeded")]  # fmt: skip
    return o


def test_healthy_observation_passes_every_checker() -> None:
    found = checkers.check(healthy())
    assert found == {name: [] for name in checkers.CHECKERS}


# ---------------------------------------------------------------------- lost


def test_lost_task() -> None:
    o = healthy()
    o.tasks.append(TaskOutcome("t2", 3.0, True, 1, 0, 1, 0, None, replicas=("n1", "n2")))
    assert checkers.lost(o) == ["t2: accepted at 3.00 s, no agent holds its record"]


def test_refused_task_is_not_lost() -> None:
    o = healthy()
    o.tasks.append(TaskOutcome("t2", 3.0, False, 1, 0, 1, 0, None, error="busy"))
    assert checkers.lost(o) == []


def test_lost_task_all_replicas_crashed_says_beyond() -> None:
    o = healthy()
    o.tasks.append(TaskOutcome("t2", 3.0, True, 1, 0, 1, 0, None, replicas=("n1", "n2")))
    o.faults = [fault(10, "crash", 1, 2)]
    (msg,) = checkers.lost(o)
    assert msg.startswith("t2: accepted at 3.00 s, no agent holds its record (all of its "
                          "replicas n1, n2 crashed: beyond the r - 1 failures")  # fmt: skip


def test_lost_task_one_replica_crashed_is_not_beyond() -> None:
    o = healthy()
    o.tasks.append(TaskOutcome("t2", 3.0, True, 1, 0, 1, 0, None, replicas=("n1", "n2")))
    o.faults = [fault(10, "crash", 1), fault(1, "crash", 2)]  # n2 crashed before the submit
    (msg,) = checkers.lost(o)
    assert "beyond" not in msg


# ---------------------------------------------------------------------- stuck


def test_stuck_task() -> None:
    o = healthy()
    rec = Record("running", "n3", 2, 0, 5, 5.1, 5.2, NAN)
    o.tasks.append(TaskOutcome("t2", 5.0, True, 1, 0, 1, 0, rec))
    assert checkers.stuck(o) == ["t2: still running at the end (attempt 2 on n3)"]
    o.tasks[-1].record = Record("pending", "", 1, 0, 5, NAN, NAN, NAN)
    assert checkers.stuck(o) == ["t2: still pending at the end (attempt 1 on -)"]
    for state in ("succeeded", "failed", "cancelled", "rejected"):
        o.tasks[-1].record = Record(state, "n3", 1, 0, 5, 5.1, 5.2, 9)
        assert checkers.stuck(o) == [], state


# ---------------------------------------------------------------------- duplicates


def test_two_commits_naming_different_runs_are_duplicates() -> None:
    o = healthy()
    o.commits.append(Commit(7, "n3", "t0", 2, "n2", "succeeded"))
    assert checkers.duplicate_results(o) == [
        "t0: results recorded for attempt 1 on n0 (succeeded), attempt 2 on n2 (succeeded)"]


def test_commits_with_different_states_are_duplicates() -> None:
    o = healthy()
    o.commits.append(Commit(7, "n2", "t1", 1, "n1", "failed"))
    assert len(checkers.duplicate_results(o)) == 1


def test_identical_repeated_commits_are_not_duplicates() -> None:
    """The same result recorded by several replicas (or re-sent) is one result."""
    o = healthy()
    o.commits += [Commit(4.5, "n1", "t0", 1, "n0", "succeeded"),
                  Commit(9, "n3", "t0", 1, "n0", "succeeded")]  # fmt: skip
    assert checkers.duplicate_results(o) == []


# ---------------------------------------------------------------------- unmatched


def test_success_whose_run_ended_failed_is_unmatched() -> None:
    o = healthy()
    o.runs[0] = ended_run("t0", 1.2, 4, node="n0", state="failed", exit_code=3)
    assert checkers.unmatched_results(o) == [
        "t0: recorded succeeded/0 for attempt 1 on n0, which had failed/3"]


def test_success_with_no_run_is_unmatched() -> None:
    o = healthy()
    o.tasks[1].record = Record("succeeded", "n2", 1, 0, 2, 2.1, 2.2, 6)  # ran on n1, not n2
    assert checkers.unmatched_results(o) == [
        "t1: recorded succeeded/0 for attempt 1 on n2, which had no run that ended"]


def test_wrong_attempt_or_exit_code_is_unmatched() -> None:
    o = healthy()
    o.tasks[0].record = Record("succeeded", "n0", 2, 0, 1, 1.1, 1.2, 4)
    o.tasks[1].record = Record("failed", "n1", 1, 1, 2, 2.1, 2.2, 6)
    assert [m.split(":")[0] for m in checkers.unmatched_results(o)] == ["t0", "t1"]


def test_run_still_running_does_not_match_a_result() -> None:
    o = healthy()
    o.runs[0] = Run("n0", "t0", 1, 1.2, 1.0, 0)  # never ended
    assert len(checkers.unmatched_results(o)) == 1


def test_cancelled_needs_no_run() -> None:
    o = healthy()
    o.tasks[0].record = Record("cancelled", "", 1, 0, 1, NAN, NAN, 2)
    assert checkers.unmatched_results(o) == []


def test_failed_result_matching_a_failed_run_passes() -> None:
    o = healthy()
    o.tasks[0].record = Record("failed", "n0", 1, 2, 1, 1.1, 1.2, 4)
    o.runs[0] = ended_run("t0", 1.2, 4, node="n0", state="failed", exit_code=2)
    assert checkers.unmatched_results(o) == []


# ---------------------------------------------------------------------- overcommit


def test_overlapping_runs_beyond_cpus_overcommit() -> None:
    o = obs_of(cpus=4.0)
    o.runs = [ended_run("a", 0, 10, cpus=3), ended_run("b", 5, 15, cpus=2),
              ended_run("c", 0, 15, node="n1", cpus=4)]  # fmt: skip
    assert checkers.overcommit(o) == [
        f"n0 at 5.000 s: runs reserve 5 CPUs / 0 B / 0 GPUs of 4 / {8 << 30} / 0"]


def test_back_to_back_runs_do_not_overcommit() -> None:
    """A run ending at t frees its CPUs for one starting at t."""
    o = obs_of(cpus=4.0)
    o.runs = [ended_run("a", 0, 5, cpus=3), ended_run("b", 5, 15, cpus=2),
              ended_run("c", 0, 15, cpus=1)]  # fmt: skip
    assert checkers.overcommit(o) == []


def test_zero_length_run_frees_its_cpus() -> None:
    """A run that ends the instant it starts (exit 127, or its node crashes then) must not
    keep its CPUs reserved for the rest of the run: its end sorts before its own start."""
    o = obs_of(cpus=4.0)
    o.runs = [ended_run("a", 1, 1, cpus=3, state="failed", exit_code=127),
              ended_run("b", 2, 5, cpus=2), ended_run("c", 2, 5, cpus=2)]  # fmt: skip
    assert checkers.overcommit(o) == []
    o.runs.append(Run("n0", "d", 1, 7, 3, 0))  # never ended: the crash at 7 ends it at once
    o.runs.append(ended_run("e", 8, 9, cpus=2))
    o.faults = [fault(7, "crash", 0), fault(7.5, "restart", 0)]
    assert checkers.overcommit(o) == []


def test_memory_and_gpus_overcommit() -> None:
    o = obs_of()
    o.runs = [Run("n0", "a", 1, 0, 1, 6 << 30, end=10, state="succeeded", exit_code=0),
              Run("n0", "b", 1, 1, 1, 3 << 30, end=10, state="succeeded", exit_code=0),
              Run("n1", "c", 1, 0, 1, 0, gpus=1, end=10, state="succeeded", exit_code=0)]
    found = checkers.overcommit(o)
    assert [m.split(" at ")[0] for m in found] == ["n0", "n1"]


def test_run_on_crashed_node_counts_only_until_the_crash() -> None:
    o = obs_of(cpus=4.0)
    o.runs = [Run("n0", "a", 1, 0, 3, 0),  # never ended: its node crashed at 5
              ended_run("b", 6, 15, cpus=2)]  # after the restart
    o.faults = [fault(5, "crash", 0), fault(5.5, "restart", 0)]
    assert checkers.run_end(o, o.runs[0]) == 5.0
    assert checkers.overcommit(o) == []
    o.faults = [fault(7, "crash", 0)]  # crash after b started: both held CPUs over [6, 7)
    assert len(checkers.overcommit(o)) == 1


def test_run_without_end_or_crash_lasts_until_the_end() -> None:
    o = obs_of(cpus=4.0, end=50.0)
    o.runs = [Run("n0", "a", 1, 0, 3, 0), ended_run("b", 49, 60, cpus=2)]
    assert checkers.run_end(o, o.runs[0]) == 50.0
    assert len(checkers.overcommit(o)) == 1


def test_mode_overcommit_problems_are_reported() -> None:
    o = healthy()
    o.extra_problems["overcommit"] = ["n1 ledger: 5 CPUs of 4 at 3.0 s"]
    assert checkers.check(o)["overcommit"] == ["n1 ledger: 5 CPUs of 4 at 3.0 s"]


# ---------------------------------------------------------------------- metrics


def test_completion_mean_p50_p99_and_slowdown() -> None:
    o = obs_of()
    o.tasks = [done(f"t{i}", 10, 10 + c, expected=c / 2) for i, c in enumerate([1, 2, 3, 4, 10])]
    o.tasks.append(done("t9", 10, 99, state="failed"))  # not counted in completion
    o.tasks.append(TaskOutcome("tr", 10, False, 1, 0, 1, 0))  # refused: not accepted
    m = metrics.compute(o)
    assert (m["tasks"], m["accepted"], m["completed"]) == (7, 6, 5)
    assert m["completion_rate"] == pytest.approx(5 / 6)
    assert m["mean_completion"] == pytest.approx(4.0)
    assert m["p50_completion"] == pytest.approx(3.0)
    assert m["p99_completion"] == pytest.approx(4 + 6 * 0.96)
    assert m["mean_slowdown"] == pytest.approx(2.0)
    assert m["deadline_misses"] is None  # no task had a deadline


def test_percentile() -> None:
    assert math.isnan(metrics.percentile([], 0.5))
    assert metrics.percentile([5.0], 0.99) == 5.0
    assert metrics.percentile([4, 1, 3, 2], 0.5) == pytest.approx(2.5)
    assert metrics.percentile([1, 2, 3], 1.0) == 3 and metrics.percentile([1, 2, 3], 0) == 1


def test_deadline_misses() -> None:
    o = obs_of()
    o.tasks = [
        done("t0", 0, 5, deadline=6),  # met
        done("t1", 0, 5, deadline=5),  # met exactly
        done("t2", 0, 9, deadline=6),  # late
        done("t3", 0, 3, deadline=6, state="failed"),  # never succeeded: missed
        done("t4", 0, 50),  # no deadline: not counted
    ]
    o.tasks.append(TaskOutcome("t5", 0, True, 1, 0, 1, 4.0, None))  # lost: missed
    assert metrics.compute(o)["deadline_misses"] == pytest.approx(3 / 5)


def test_compute_is_not_quadratic_in_tasks() -> None:
    """The 5,000-node scenario has ~25,000 tasks: figures must take well under a second
    (a membership test by dataclass equality made deadline misses take a minute)."""
    o = obs_of()
    o.tasks = [done(f"t{i}", i * 0.01, i * 0.01 + 2, deadline=1.5 + (i % 2)) for i in range(20000)]
    t0 = time.perf_counter()
    m = metrics.compute(o)
    assert time.perf_counter() - t0 < 5.0
    assert m["deadline_misses"] == pytest.approx(0.5)  # the half with deadline 1.5 < 2


def crash_obs() -> Observation:
    """n2 of 4 crashes at 10; every survivor declares it failed by 13."""
    o = obs_of(n=4, end=60)
    o.faults = [fault(10, "crash", 2)]
    o.members = [MemberEvent(11, "n0", "n2", "suspect"), MemberEvent(11.5, "n0", "n2", "failed"),
                 MemberEvent(12, "n1", "n2", "failed"), MemberEvent(13, "n3", "n2", "failed"),
                 MemberEvent(14, "n1", "n2", "failed")]  # fmt: skip
    return o


def test_detection_time_when_all_survivors_declare() -> None:
    m = metrics.detection_and_recovery(crash_obs())
    assert m["crashes_detected"] == 1 and m["crashes_undetected"] == 0
    assert m["detection_time_mean"] == pytest.approx(3.0)  # the last survivor, n3, at 13
    assert m["detection_time_max"] == pytest.approx(3.0)


def test_detection_needs_every_survivor() -> None:
    o = crash_obs()
    o.members = [e for e in o.members if e.observer != "n3"]
    m = metrics.detection_and_recovery(o)
    assert (m["crashes_detected"], m["crashes_undetected"]) == (0, 1)
    assert math.isnan(m["detection_time_mean"])


def test_survivor_that_is_down_itself_need_not_declare() -> None:
    o = crash_obs()
    o.members = [e for e in o.members if e.observer != "n3"]
    o.faults.append(fault(9, "pause", 3))  # n3 paused through the whole detection
    m = metrics.detection_and_recovery(o)
    assert m["crashes_detected"] == 1
    assert m["detection_time_mean"] == pytest.approx(2.0)


def test_crash_whose_node_restarts_first_is_undetected() -> None:
    o = crash_obs()
    o.faults.append(fault(11, "restart", 2))  # back before n1 and n3 declared
    m = metrics.detection_and_recovery(o)
    assert (m["crashes_detected"], m["crashes_undetected"]) == (0, 1)


def test_declaration_before_the_crash_does_not_count() -> None:
    o = crash_obs()
    o.members = [MemberEvent(5, "n3", "n2", "failed")] + [
        e for e in o.members if e.observer != "n3"]
    assert metrics.detection_and_recovery(o)["crashes_undetected"] == 1


def test_no_membership_means_nothing_to_detect() -> None:
    o = crash_obs()
    o.members = []
    o.has_membership = False
    m = metrics.detection_and_recovery(o)
    assert (m["crashes_detected"], m["crashes_undetected"]) == (0, 0)


def test_recovery_time() -> None:
    o = crash_obs()
    o.runs = [
        Run("n2", "t0", 1, 5, 1, 0),  # killed by the crash at 10
        ended_run("t0", 14, 20, node="n1", attempt=2),  # runs again 4 s later
        Run("n2", "t1", 1, 8, 1, 0),  # killed too ...
        ended_run("t1", 16.5, 20, node="n0", attempt=2),  # ... again after 6.5 s
        Run("n2", "t2", 1, 9, 1, 0),  # never runs again
        ended_run("t3", 2, 6, node="n2"),  # finished before the crash: nothing to recover
    ]
    o.tasks = [done("t0", 4, 20, node="n1", attempt=2), done("t1", 7, 20, node="n0", attempt=2),
               TaskOutcome("t2", 8, True, 1, 0, 1, 0, None), done("t3", 1, 6, node="n2")]
    m = metrics.detection_and_recovery(o)
    assert (m["tasks_recovered"], m["tasks_unrecovered"]) == (2, 1)
    assert m["recovery_time_mean"] == pytest.approx(5.25)
    assert m["recovery_time_max"] == pytest.approx(6.5)


def test_cancelled_task_needs_no_recovery() -> None:
    o = crash_obs()
    o.runs = [Run("n2", "t0", 1, 5, 1, 0)]
    o.tasks = [done("t0", 4, 12, state="cancelled", node="")]
    m = metrics.detection_and_recovery(o)
    assert (m["tasks_recovered"], m["tasks_unrecovered"]) == (0, 0)


def test_false_failures() -> None:
    o = obs_of(n=5, end=100)
    o.detection_window = 5.0
    o.faults = [fault(10, "crash", 2), fault(40, "partition", groups=((0, 1), (3, 4))),
                fault(50, "heal"), fault(70, "pause", 4), fault(80, "resume", 4)]  # fmt: skip
    o.members = [
        MemberEvent(12, "n0", "n2", "failed"),  # crashed: true
        MemberEvent(45, "n0", "n3", "failed"),  # cut off from n0: true
        MemberEvent(54, "n0", "n4", "failed"),  # healed 4 s before, within the window: true
        MemberEvent(45, "n0", "n1", "failed"),  # same side, fine: FALSE
        MemberEvent(30, "n1", "n3", "failed"),  # nothing happened: FALSE
        MemberEvent(30, "n1", "n3", "suspect"),  # only a suspicion: not a declaration
        MemberEvent(75, "n4", "n1", "failed"),  # by a paused observer about a fine node
        MemberEvent(30, "n9", "n3", "failed"),  # unknown observer: ignored
    ]
    assert metrics.false_failures(o) == (2, 1)
    m = metrics.compute(o)
    assert (m["false_failures"], m["false_failures_by_disturbed"]) == (2, 1)


def test_compute_turns_nan_into_none() -> None:
    o = obs_of()
    m = metrics.compute(o)
    assert m["mean_completion"] is None and m["completion_rate"] is None
    assert m["tasks"] == 0 and m["runs"] == 0


def test_utilization_and_messages() -> None:
    o = obs_of(n=2, end=10)
    o.loads = [(0, "n0", 0.2), (1, "n0", 0.4), (0, "n1", 0.6), (1, "n1", 0.8)]
    o.messages_sent = 100
    m = metrics.compute(o)
    assert m["mean_utilization"] == pytest.approx(0.5)
    assert m["utilization_spread"] == pytest.approx(0.2)
    assert m["messages_per_node_s"] == pytest.approx(5.0)


def test_samples_count_up_nodes_and_reserved_cpus() -> None:
    o = obs_of(n=2, cpus=4.0, end=4)
    o.faults = [fault(2, "crash", 1)]
    o.runs = [ended_run("a", 0, 3, node="n0", cpus=2), Run("n1", "b", 1, 0, 4, 0)]
    o.tasks = [done("a", 0, 3), TaskOutcome("b", 0, True, 4, 0, 1, 0, None)]
    s = metrics.samples(o, 1.0)
    assert [x.live_members for x in s] == [2, 2, 1, 1, 1]
    assert [x.task_utilization for x in s] == pytest.approx([0.75, 0.75, 0.5, 0.0, 0.0])
    assert [x.in_flight for x in s] == [2, 2, 2, 1, 1]  # b never finishes
