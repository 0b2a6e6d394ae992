"""Placement and task-record replication on the deterministic simulator.

Whole node cores (SWIM membership + placement) run on `SimExecutor`s in a
`scenarios.sim.placement_cluster.PlacementCluster`, which checks at every instant that no node
leases, commits or runs more than its capacity, and at the end that every accepted task is
terminal, that no task had two results recorded and that replicas agree.

The guarantee under test: once `submit` returns an id, the task reaches a terminal state as long
as fewer than r (3) nodes of its replica set fail within one failure-detection period, whether
the failed node ran it, owned its record, or both; a task whose node dies is re-placed and its
result is recorded exactly once.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.execution import StartTask
from agent.messages import (
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Release,
    ReportAck,
    TaskCancel,
    TaskGetReply,
    TaskPut,
    TaskPutAck,
    TaskReport,
)
from agent.ring import HashRing
from agent.tasks import TaskRecord, TaskState
from scenarios.sim.background import BackgroundTrace
from scenarios.sim.network import NetworkModel
from scenarios.sim.placement_cluster import (
    FAST_PLACEMENT,
    GiB,
    NodeShape,
    PlacementCluster,
    task_spec,
)
from scenarios.sim.workload import on_core

N = 12
R = 3  # replicas (PlacementConfig default)
ZONE_B = {8, 9, 10, 11}  # nodes labelled zone=b; the others are zone=a
# for the tests of what happens during a bid round: a roomy cluster awards without one
BID_ROUNDS = dataclasses.replace(FAST_PLACEMENT, direct_awards=False)


def zoned(i: int) -> NodeShape:
    return NodeShape(cpus=4.0, memory=16 * GiB, labels={"zone": "b" if i in ZONE_B else "a"})


def make(seed: int, n: int = N, **kw) -> PlacementCluster:
    kw.setdefault("shape", zoned)
    c = PlacementCluster(n, seed, **kw)
    c.run_for(0.5)
    return c


def preference(c: PlacementCluster, task_id: str) -> list[str]:
    """The replica set a submit computes when every node is alive."""
    return HashRing(c.ids).preference(task_id, R)


def zone_a_task_id(c: PlacementCluster, prefix: str) -> str:
    """A task id whose whole replica set is in zone a, so a zone-b task never runs on a replica
    (crashing its runner and crashing its owner are then separate events)."""
    for k in range(1000):
        tid = f"{prefix}{k}"
        if all(int(n[1:]) not in ZONE_B for n in preference(c, tid)):
            return tid
    raise AssertionError("no such id")


def state_of(c: PlacementCluster, tid: str) -> TaskState | None:
    r = c.newest(tid)
    return None if r is None else r.state


def wait_state(c: PlacementCluster, tid: str, *states: TaskState, timeout: float = 30.0) -> None:
    t = c.sim.run_until_true(lambda: state_of(c, tid) in states, timeout, 0.005)
    assert t is not None, c.describe(tid)


def owner_addr(c: PlacementCluster, tid: str) -> str:
    """First replica of the newest record that is up (what every live node will agree on)."""
    rec = c.newest(tid)
    for n in rec.replicas:
        if c.sim.is_up(c.addr_of(n)):
            return c.addr_of(n)
    raise AssertionError(c.describe(tid))


def assert_clean(c: PlacementCluster, *tids: str) -> None:
    problems = c.problems()
    detail = "\n".join(c.describe(t) for t in tids)
    assert not problems, f"{problems}\n{detail}"


def settle(c: PlacementCluster, timeout: float = 120.0) -> None:
    assert c.settle(timeout), (c.lost_tasks()[:5], c.unanswered()[:5])


def one_result(c: PlacementCluster, tid: str) -> tuple:
    """The single (attempt, runner, state) recorded for the task."""
    runs = {(att, runner, s) for _, att, runner, s in c.commits().get(tid, [])}
    assert len(runs) == 1, c.describe(tid)
    return runs.pop()


# ---------------------------------------------------------------------- steady state


def test_basic_20_nodes_300_tasks_all_succeed_once():
    c = PlacementCluster(20, 1)
    c.run_for(1.0)
    rng = random.Random(1)
    for i in range(300):
        spec = task_spec(cpus=rng.choice([0.5, 1, 2]), expected=rng.uniform(0.5, 5),
                         memory=rng.choice([0, GiB, 4 * GiB]))  # fmt: skip
        c.submit(f"t{i}", spec, via=rng.randrange(20), at=1.0 + i * 0.02)
    settle(c)
    assert all(r.ok for r in c.submits())
    assert c.states() == {"succeeded": 300}
    assert_clean(c)
    # each task ran exactly once, and its recorded result is that run's exit
    for i in range(300):
        runs = c.runs_of(f"t{i}")
        assert len(runs) == 1, c.describe(f"t{i}")
        rec = c.newest(f"t{i}")
        assert (rec.node, rec.attempt) == runs[0][:2]
        end = next(e for e in c.nodes[c.addr_of(rec.node)].executor.ended
                   if e.exit.task_id == f"t{i}")  # fmt: skip
        assert (rec.started, rec.finished) == (end.started, end.ended)
        assert (rec.state, rec.exit_code) == (end.exit.state, end.exit.exit_code)
    assert c.ignored_counters() == {} or set(c.ignored_counters()) <= {"stale_report_acks"}
    # every node ends idle: nothing leased or committed any more
    for core in c.cores():
        assert core.placement.ledger.used().cpus == 0


@pytest.mark.slow
def test_big_cluster_mixed_sizes_invariants_hold():
    n = 200
    shapes = [NodeShape(4.0, 16 * GiB), NodeShape(8.0, 32 * GiB),
              NodeShape(16.0, 64 * GiB, 1, {"gpu": "yes"}), NodeShape(2.0, 4 * GiB)]  # fmt: skip
    rng = random.Random(2)
    traces = [BackgroundTrace([rng.uniform(0, 0.6) for _ in range(12)], step=5.0,
                              offset=rng.uniform(0, 60)) for _ in range(16)]  # fmt: skip
    c = PlacementCluster(n, 2, shape=lambda i: shapes[i % 4], background=traces)
    c.run_for(1.0)
    # failures spaced by more than failure detection: a crash every 10 s, and a pause past it
    det = c.detection_time()
    for k, at in enumerate((8.0, 18.0, 28.0)):
        c.crash(10 + 37 * k, at=at)
    c.pause(150, at=12.0)
    c.resume(150, at=12.0 + det + 2.0)
    for i in range(2500):
        kind = rng.random()
        if kind < 0.6:
            spec = task_spec(cpus=rng.choice([0.25, 0.5, 1]), expected=rng.uniform(0.5, 4))
        elif kind < 0.9:
            spec = task_spec(cpus=rng.choice([2, 4]), memory=rng.choice([2, 8]) * GiB,
                             expected=rng.uniform(2, 10))  # fmt: skip
        else:
            spec = task_spec(cpus=rng.choice([6, 12]), gpus=1, memory=16 * GiB,
                             labels={"gpu": "yes"}, expected=rng.uniform(3, 15))  # fmt: skip
        c.submit(f"t{i}", spec, via=rng.randrange(n), at=1.0 + i * 0.012)
    settle(c, timeout=300)
    assert det < 10.0 and len(c.crashed) == 3
    failed = {r.task_id for r in c.submits() if not r.ok}
    assert len(failed) < 30  # only submits through a node as it crashed, or naming it
    assert all("replicas" in r.error or r.reply is None for r in c.submits() if not r.ok)
    assert c.states() == {"succeeded": 2500 - len(failed)}
    assert_clean(c)
    assert c.stats()["replacements"] > 0  # runs on the failed nodes were placed again


# ---------------------------------------------------------------------- submit semantics


def test_resubmission_with_the_same_id_is_idempotent():
    c = make(3)
    spec = task_spec(cpus=1, expected=3.0)
    first = c.submit("job", spec, via=0)
    c.run_for(0.5)
    again = c.submit("job", spec, via=5)  # while it runs, through another node
    c.run_for(0.5)
    other = c.submit("job", dataclasses.replace(spec, cpus=2), via=7)
    c.run_for(0.5)
    assert first.ok and first.data["existing"] is False
    assert again.ok and again.data["existing"] is True and again.data["id"] == "job"
    assert not other.ok and "taken by a different task" in other.error
    settle(c)
    late = c.submit("job", spec, via=9)  # after it finished: same task, its final state
    c.run_for(1.0)
    assert late.ok and late.data["existing"] is True and late.data["state"] == "succeeded"
    assert len(c.runs_of("job")) == 1
    assert one_result(c, "job")[2] == TaskState.SUCCEEDED
    assert_clean(c, "job")


def test_unplaceable_tasks_are_rejected_at_submit_with_a_reason():
    c = make(4)
    too_big = c.submit("big", task_spec(cpus=64), via=1)
    no_label = c.submit("gpu", task_spec(cpus=1, labels={"gpu": "a100"}), via=2)
    too_much_memory = c.submit("mem", task_spec(cpus=1, memory=512 * GiB), via=3)
    bad = c.submit("bad", task_spec(cpus=-1), via=4)
    c.run_for(1.0)
    assert not too_big.ok and "no node could ever run it" in too_big.error
    assert "64 cpus" in too_big.error and "largest node has 4 cpus" in too_big.error
    assert not no_label.ok and "labels gpu=a100" in no_label.error
    assert not too_much_memory.ok and "bytes of memory" in too_much_memory.error
    assert not bad.ok and "cpus" in bad.error
    assert c.records() == {}  # nothing was stored anywhere
    assert c.stats()["rejected_unplaceable"] == 3


def test_task_waits_while_the_cluster_is_full_then_is_placed():
    c = make(5, n=4, shape=NodeShape(cpus=2.0, memory=8 * GiB))
    for i in range(4):
        c.submit(f"fill{i}", task_spec(cpus=2, expected=4.0), via=i)
    for i in range(4):
        wait_state(c, f"fill{i}", TaskState.RUNNING)
    waiting = c.submit("late", task_spec(cpus=2, expected=1.0), via=0)
    c.run_for(2.0)
    assert waiting.ok and state_of(c, "late") == TaskState.PENDING
    assert c.stats()["rounds_without_room"] + c.stats()["no_candidates"] > 0  # backed off
    settle(c)
    assert state_of(c, "late") == TaskState.SUCCEEDED
    (start,) = [t for _, _, t in c.runs_of("late")]
    assert start >= min(t for i in range(4) for _, _, t in c.runs_of(f"fill{i}")) + 4.0
    assert waiting.data["state"] == "pending"
    assert_clean(c, "late")


# ---------------------------------------------------------------------- failures


def pinned(c: PlacementCluster, prefix: str, expected: float = 5.0) -> tuple[str, object]:
    """A task that can only run on zone-b nodes and whose replicas are all in zone a."""
    tid = zone_a_task_id(c, prefix)
    return tid, task_spec(cpus=1, expected=expected, labels={"zone": "b"})


def test_runner_crash_mid_run_replaces_the_task_with_attempt_2():
    c = make(6)
    tid, spec = pinned(c, "r")
    sub = c.submit(tid, spec, via=0)
    wait_state(c, tid, TaskState.RUNNING)
    c.run_for(1.0)
    runner = c.addr_of(c.newest(tid).node)
    c.crash(runner)
    settle(c)
    assert sub.ok
    att, node, st = one_result(c, tid)
    assert (att, st) == (2, TaskState.SUCCEEDED) and c.addr_of(node) != runner
    assert [a for _, a, _ in c.runs_of(tid)] == [1, 2]
    assert c.stats()["runner_lost"] >= 1
    assert_clean(c, tid)


def slow_bidders(c: PlacementCluster, owner: str) -> None:
    """Bids reach `owner` 50 ms late, so its round is still open when the submit is answered
    (the owner asks for bids as it confirms the record with the replicas, a few ms)."""
    for i in ZONE_B:
        c.sim.network.set_link(owner, c.addrs[i], latency=0.05)


def crash_once_answered(c: PlacementCluster, tid: str, box: list, *crash: str) -> None:
    """Crash `crash` as soon as the submit in `box` is answered, with the round still open."""
    owner = crash[0]

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if not box or box[0].reply is None:
            return False
        assert box[0].ok, box[0].error
        assert cl.core(owner).placement.owner.drives[tid].neg.round is not None
        for a in crash:
            cl.crash_soon(a)  # the bidders' answers go to a dead owner
        return True

    c.watch(watch)


def test_owner_crash_mid_negotiation_next_replica_takes_over():
    c = make(7, placement=BID_ROUNDS)
    tid, spec = pinned(c, "o")
    owner = c.addr_of(preference(c, tid)[0])
    slow_bidders(c, owner)
    box: list = []
    crash_once_answered(c, tid, box, owner)
    box.append(sub := c.submit(tid, spec, via=1))
    settle(c)
    assert sub.ok and owner in c.crashed
    att, node, st = one_result(c, tid)
    assert st == TaskState.SUCCEEDED and len(c.runs_of(tid)) == 1
    assert c.newest(tid).writer != c.ids[c.addrs.index(owner)]
    assert_clean(c, tid)


def _final_reports(c, crash_the_first_receiver: bool = False) -> list[str]:  # noqa: ANN001
    """The addresses final reports are delivered to, in order, as the run goes on."""
    got: list[str] = []

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is not None and isinstance(msg.body, TaskReport) and msg.body.state.terminal:
            got.append(addr)
            if crash_the_first_receiver and len(got) == 1:
                cl.crash_soon(addr)
        return False

    c.watch(watch)
    return got


def test_a_final_report_goes_to_the_owner_alone_and_to_every_replica_only_when_resent():
    c = make(19)
    tid, spec = pinned(c, "f", expected=1.0)
    got = _final_reports(c)
    c.submit(tid, spec, via=2)
    settle(c)
    assert got == [owner_addr(c, tid)]  # the other replicas would only have dropped it
    assert one_result(c, tid)[::2] == (1, TaskState.SUCCEEDED)
    assert_clean(c, tid)


def test_a_final_report_the_owner_never_got_is_resent_to_every_replica():
    """The owner crashes as the run ends: its copy of the report is lost with it, and the
    re-send reaches the next replica, which records the result (no second run)."""
    c = make(20)
    tid, spec = pinned(c, "h", expected=1.0)
    got = _final_reports(c, crash_the_first_receiver=True)
    c.submit(tid, spec, via=2)
    settle(c)
    assert len(got) > 1 and got[0] in c.crashed
    assert one_result(c, tid)[::2] == (1, TaskState.SUCCEEDED)
    assert len(c.runs_of(tid)) == 1
    assert_clean(c, tid)


def test_owner_crash_mid_run_next_replica_records_the_result_without_rerun():
    c = make(8)
    tid, spec = pinned(c, "m")
    c.submit(tid, spec, via=2)
    wait_state(c, tid, TaskState.RUNNING)
    c.run_for(1.0)
    c.crash(owner_addr(c, tid))
    settle(c)
    assert one_result(c, tid)[::2] == (1, TaskState.SUCCEEDED)
    assert len(c.runs_of(tid)) == 1  # the runner kept going and reported to the new owner
    assert_clean(c, tid)


def test_owner_and_runner_crash_at_once():
    c = make(9)
    tid, spec = pinned(c, "b")
    c.submit(tid, spec, via=3)
    wait_state(c, tid, TaskState.RUNNING)
    c.run_for(0.7)
    runner, owner = c.addr_of(c.newest(tid).node), owner_addr(c, tid)
    c.crash(runner)
    c.crash(owner)
    settle(c)
    att, node, st = one_result(c, tid)
    assert (att, st) == (2, TaskState.SUCCEEDED) and c.addr_of(node) != runner
    assert_clean(c, tid)


@pytest.mark.parametrize("when", ["negotiation", "run"])
def test_r_minus_1_replicas_crash_at_once(when):
    c = make(10, placement=BID_ROUNDS)
    tid, spec = pinned(c, "x")
    first, second, third = (c.addr_of(n) for n in preference(c, tid))
    if when == "negotiation":
        slow_bidders(c, first)
        box: list = []
        crash_once_answered(c, tid, box, first, second)
        box.append(c.submit(tid, spec, via=third))
    else:
        c.submit(tid, spec, via=third)
        wait_state(c, tid, TaskState.RUNNING)
        c.run_for(1.0)
        c.crash(first)
        c.crash(second)
    settle(c)
    assert {first, second} <= set(c.crashed)
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    final = c.newest(tid)
    assert final.writer == c.ids[c.addrs.index(third)] or third in {
        c.addr_of(n) for n in final.replicas}  # fmt: skip
    assert len([n for n in final.replicas if c.addr_of(n) not in c.crashed]) == R  # repaired
    assert_clean(c, tid)


def test_paused_runner_late_result_is_refused_and_recorded_once():
    c = make(11)
    tid, spec = pinned(c, "p", expected=3.0)
    c.submit(tid, spec, via=0)
    wait_state(c, tid, TaskState.RUNNING)
    runner = c.addr_of(c.newest(tid).node)
    c.pause(runner)
    c.run_for(c.detection_time() + 4.0)  # its run "ends" meanwhile; the task is re-placed
    rec = c.newest(tid)
    assert rec.attempt == 2 and c.addr_of(rec.node) != runner, c.describe(tid)
    stale_before = c.stats()["stale_reports"]
    c.resume(runner)
    settle(c)
    assert c.stats()["stale_reports"] > stale_before  # its attempt-1 report was refused
    assert one_result(c, tid)[:2] == (2, rec.node)
    assert {a for _, a, _ in c.runs_of(tid)} == {1, 2}
    assert_clean(c, tid)


def test_paused_owner_that_also_ran_the_task_cannot_record_its_late_result():
    """The owner ran the task itself, was paused past failure detection (the next replica took
    over and re-placed it), and resumed: when its run's exit comes in it still believes it owns
    the record, but its late result must not be recorded beside the one of attempt 2."""
    tid = "self"
    c0 = make(12)
    owner_i = int(preference(c0, tid)[0][1:])
    other_i = next(i for i in range(N) if f"n{i}" not in preference(c0, tid))

    def shape(i: int) -> NodeShape:
        labels = {"zone": "b"} if i in (owner_i, other_i) else {"zone": "a"}
        if i == other_i:
            labels["slot"] = "x"
        return NodeShape(cpus=2.0, memory=16 * GiB, labels=labels)

    c = make(12, shape=shape)
    owner = c.addrs[owner_i]
    c.submit("fill", task_spec(cpus=2, expected=2.0, labels={"slot": "x"}), via=0)
    wait_state(c, "fill", TaskState.RUNNING)  # the other zone-b node is busy: the owner gets it
    c.submit(tid, task_spec(cpus=2, expected=3.0, labels={"zone": "b"}), via=owner)
    wait_state(c, tid, TaskState.RUNNING)
    assert c.addr_of(c.newest(tid).node) == owner, c.describe(tid)
    c.pause(owner)
    t = c.sim.run_until_true(lambda: c.newest(tid).state.terminal, 30.0, 0.05)
    assert t is not None and one_result(c, tid)[0] == 2, c.describe(tid)
    c.resume(owner)  # its attempt-1 run has "ended" meanwhile
    settle(c)
    assert one_result(c, tid)[:2] == (2, f"n{other_i}"), c.describe(tid)
    assert {a for _, a, _ in c.runs_of(tid)} == {1, 2}
    assert_clean(c, tid)


def test_cancel_is_answered_only_once_the_cancellation_is_replicated():
    """The owner dies right after handling a cancel, before it could push the cancellation: the
    client must not have been told "cancelled" (the next owner lets the task finish)."""
    c = make(16)
    tid, spec = pinned(c, "k", expected=2.0)
    c.submit(tid, spec, via=0)
    wait_state(c, tid, TaskState.RUNNING)
    owner = owner_addr(c, tid)

    def crash_owner_on_cancel(cl, addr, now, msg):
        if addr == owner and msg is not None and isinstance(msg.body, TaskCancel):
            cl.crash_soon(owner)
            return True
        return False

    c.watch(crash_owner_on_cancel)
    req = c.cancel(tid, via=next(a for a in c.addrs if a != owner))
    settle(c)
    assert owner in c.crashed and req.reply is not None
    assert not req.ok and "no owner" in req.error, (req.reply, c.describe(tid))
    assert c.newest(tid).state == TaskState.SUCCEEDED
    assert len(c.runs_of(tid)) == 1  # the run was not stopped by a cancellation that was lost
    assert_clean(c, tid)


@pytest.mark.parametrize("expected", [2.0, 60.0])
def test_replica_left_behind_while_paused_does_not_revive_its_stale_copy(expected):
    """A replica paused past failure detection is replaced (repair) and later resumes with its
    old copy. Then the two replicas before it in that copy's list fail, one at a time, each
    well apart (within the guarantee): it finds itself first there and must learn that the
    record lives on elsewhere instead of placing the task again from its old copy. The runner,
    which reports to the first live replica of the record it was awarded (the stale one), must
    be told where the record lives now, or the real owner re-places a healthy run (60 s)."""
    c = make(21)
    tid, spec = pinned(c, "s", expected=expected)
    a, b, stale = (c.addr_of(n) for n in preference(c, tid))
    det = c.detection_time()
    c.submit(tid, spec, via=a)
    wait_state(c, tid, TaskState.RUNNING)
    c.pause(stale)
    c.run_for(det + 3.0)
    assert stale[6:] not in c.newest(tid).replicas, c.describe(tid)  # repaired without it
    c.resume(stale)
    c.run_for(det)
    c.crash(a)
    c.run_for(det + 2.0)
    c.crash(b)
    settle(c)
    assert len(c.runs_of(tid)) == 1, c.describe(tid)
    assert one_result(c, tid)[::2] == (1, TaskState.SUCCEEDED)
    assert_clean(c, tid)


@pytest.mark.parametrize("cut_at", [BidRequest, Award])
@pytest.mark.parametrize("long", [False, True])
def test_partition_mid_negotiation_then_heal(long, cut_at):
    """Cut off while the bid requests are on their way, or (roomy nodes awarded without a
    round) the award."""
    c = make(13, placement=BID_ROUNDS if cut_at is BidRequest else FAST_PLACEMENT)
    rng = random.Random(13)
    for i in range(40):
        c.submit(f"w{i}", task_spec(cpus=rng.choice([1, 2]), expected=rng.uniform(1, 4)),
                 via=rng.randrange(N), at=0.6 + i * 0.05)  # fmt: skip
    tid = zone_a_task_id(c, "q")
    owner = c.addr_of(preference(c, tid)[0])
    half = [a for a in c.addrs if a != owner][: N // 2]
    duration = 3 * c.detection_time() if long else 0.3

    def split_when_bids_are_asked(cl, addr, now, msg):
        if msg is not None and isinstance(msg.body, cut_at) and (
            msg.body.task_id if cut_at is BidRequest else msg.body.record.id
        ) == tid:  # fmt: skip
            # the owner and the bidders on its side vs the others: answers are cut off
            side = [owner] + [a for a in half if a != addr]
            cl.partition(side)
            cl.heal(at=now + duration)
            return True
        return False

    c.watch(split_when_bids_are_asked)
    c.submit(tid, task_spec(cpus=1, expected=2.0), via=owner, at=1.0)
    settle(c)  # after the heal
    assert any(e[1] == "heal" for e in c.events)
    if cut_at is Award:
        assert c.stats()["direct_awards"] > 0
    assert not c.lost_tasks() and not c.overcommit_violations()
    assert not c.replica_disagreements() and not c.result_mismatches()
    dead = sum(core.membership.stats["declared_dead"] for core in c.cores())
    if not long:
        assert dead == 0  # shorter than failure detection: nobody was declared dead
        assert_clean(c, tid)
    else:
        assert dead > 0
        # A split longer than failure detection looks, from each side, like the failure of the
        # other side's replicas at once. Neither half sees a majority of the cluster alive, so
        # neither moves the task on: one result, recorded once (before the majority rule, each
        # side could record one).
        assert not c.double_results(), c.describe(tid)
        assert not c.broken_cancels()  # no cancel in this run


def test_bogus_bids_duplicate_awards_and_stale_messages_are_ignored_and_counted():
    c = make(14)
    tid, spec = pinned(c, "g", expected=4.0)
    c.submit(tid, spec, via=0)
    wait_state(c, tid, TaskState.RUNNING)
    rec = c.newest(tid)
    owner, runner = owner_addr(c, tid), c.addr_of(rec.node)
    other = next(a for a in c.addrs if a not in (owner, runner))
    before = c.stats()
    led_before = c.core(runner).placement.ledger.used()
    # a bid for a task the owner never asked it about (and one for a task it does not know)
    c.inject(owner, other, Bid(tid, rec.attempt, 1, True, headroom=9.0))
    c.inject(owner, other, Bid("nope", 1, 1, True))
    # the award again (duplicate), and an award for an attempt the runner never bid on
    awarded = c.core(runner).placement.worker.runs[(tid, rec.attempt)].record
    c.inject(runner, owner, Award(awarded, 1))  # the very award it got, replayed
    forged = dataclasses.replace(rec, attempt=rec.attempt + 5, version=rec.version + 50)
    c.inject(runner, owner, Award(forged, 1))  # it would fit, but it must not stop the real run
    # releases of leases that do not exist, acks and reports for attempts that are not current
    c.inject(runner, owner, Release(tid, 99, 1))
    c.inject(other, owner, Release("nope", 1, 1))
    c.inject(owner, runner, AwardAck(tid, rec.attempt + 3, True))
    c.inject(owner, other, TaskReport(tid, rec.attempt, TaskState.SUCCEEDED, finished=1.0))
    c.inject(owner, runner, TaskReport(tid, rec.attempt + 1, TaskState.FAILED, 1, finished=1.0))
    c.run_for(0.1)
    after = c.stats()
    grew = {k: after[k] - before[k] for k in (
        "unsolicited_bids", "duplicate_awards", "stale_awards", "stale_releases",
        "stale_award_acks", "stale_reports")}  # fmt: skip
    assert grew["unsolicited_bids"] == 2
    assert grew["duplicate_awards"] == 1
    assert grew["stale_awards"] == 1  # no lease behind it: refused
    assert grew["stale_releases"] >= 2  # ours, plus the owner's releases of the bogus yes-bids
    assert grew["stale_award_acks"] == 2  # ours, and the runner's refusal of the forged award
    assert grew["stale_reports"] == 2
    assert c.core(runner).placement.ledger.used() == led_before
    settle(c)
    assert len(c.runs_of(tid)) == 1
    assert one_result(c, tid)[::2] == (rec.attempt, TaskState.SUCCEEDED)
    assert_clean(c, tid)


def test_a_runners_report_of_a_state_no_run_ends_in_is_refused():
    """The runner of the current attempt (the one peer whose reports count) says its running task
    is pending, placed or rejected: nothing of that is written and the record is not moved
    (before, each was stored as given: the running task ended up recorded as rejected while it
    still ran), and the real result is recorded once."""
    c = make(18)
    tid, spec = pinned(c, "g", expected=3.0)
    c.submit(tid, spec, via=0)
    wait_state(c, tid, TaskState.RUNNING)
    rec = c.newest(tid)
    owner, runner = owner_addr(c, tid), c.addr_of(rec.node)
    before = c.stats()
    for bogus in (TaskState.PENDING, TaskState.PLACED, TaskState.REJECTED):
        c.inject(owner, runner, TaskReport(tid, rec.attempt, bogus, finished=1.0))
    c.run_for(0.1)
    assert c.stats()["reports_refused"] - before["reports_refused"] == 3
    now = c.newest(tid)
    assert (now.state, now.attempt) == (TaskState.RUNNING, rec.attempt)
    settle(c)
    assert len(c.runs_of(tid)) == 1
    assert one_result(c, tid)[::2] == (rec.attempt, TaskState.SUCCEEDED)
    assert_clean(c, tid)


def test_a_report_about_a_task_no_runner_holds_is_refused():
    """A pending record names no runner (its node is empty). A report from a sender whose id is
    empty, for its attempt, used to match that empty runner and was written: one forged
    "cancelled" ended a task that was still being negotiated. Only a placed or running record
    has a run to report on."""
    from gossip.messages import Message

    c = make(19, placement=BID_ROUNDS)  # (a direct award would place it on a paused node)
    tid, spec = pinned(c, "f")
    for i in ZONE_B:
        c.pause(i)  # the only nodes that could run it never answer a bid
    c.submit(tid, spec, via=0)
    c.run_for(1.0)
    rec = c.newest(tid)
    assert rec.state == TaskState.PENDING and rec.node == ""
    owner = owner_addr(c, tid)
    before = c.stats()
    forged = Message("", "sim://forger", 0,
                     TaskReport(tid, rec.attempt, TaskState.CANCELLED, finished=1.0))
    c.sim.call(owner, lambda n, now: n.on_message(now, forged))
    c.run_for(0.5)
    assert c.newest(tid).state == TaskState.PENDING
    assert c.stats()["reports_refused"] - before["reports_refused"] == 1


def test_the_owner_refuses_to_write_a_transition_the_life_cycle_forbids():
    from agent import task_states

    assert task_states.allowed(TaskState.RUNNING, TaskState.PENDING)  # runner lost: re-placed
    for final in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED):
        assert not any(task_states.allowed(final, s) for s in TaskState if s != final)
    with pytest.raises(task_states.IllegalTransition, match="succeeded -> pending"):
        task_states.check("t", TaskState.SUCCEEDED, TaskState.PENDING)
    assert not task_states.reportable(TaskState.RUNNING, TaskState.PENDING)
    assert task_states.reportable(TaskState.PLACED, TaskState.SUCCEEDED)  # a short task


def test_lost_award_is_resent_under_the_winners_lease():
    c = make(17)
    tid, spec = pinned(c, "a", expected=2.0)
    owner = c.addr_of(preference(c, tid)[0])
    zone_b = [c.addrs[i] for i in sorted(ZONE_B)]

    def drop_awards_for_a_while(cl, addr, now, msg):
        if msg is not None and isinstance(msg.body, BidRequest) and msg.body.task_id == tid:
            for b in zone_b:  # owner -> bidders only: bids still arrive, the award is lost
                cl.sim.set_link(owner, b, loss=1.0, symmetric=False)
            cl.sim.schedule(now + 0.2, lambda s: [s.network.clear_link(owner, b, False)
                                                  for b in zone_b])  # fmt: skip
            return True
        return False

    c.watch(drop_awards_for_a_while)
    c.submit(tid, spec, via=0)
    settle(c)
    s = c.stats()
    assert s["awards"] == 1 and s["stale_awards"] == 0 and s["awards_refused"] == 0
    assert len(c.runs_of(tid)) == 1 and one_result(c, tid)[::2] == (1, TaskState.SUCCEEDED)
    assert_clean(c, tid)


def test_cancel_pending_running_and_finished_tasks():
    c = make(15, n=4, shape=NodeShape(cpus=2.0, memory=8 * GiB))
    for i in range(4):
        c.submit(f"fill{i}", task_spec(cpus=2, expected=6.0), via=i)
    c.run_for(0.3)
    c.submit("pending", task_spec(cpus=2, expected=1.0), via=1)
    c.submit("quick", task_spec(cpus=0.0, memory=GiB, expected=0.2), via=2)
    c.run_for(1.0)
    assert state_of(c, "pending") == TaskState.PENDING
    assert state_of(c, "fill0") == TaskState.RUNNING
    runner = c.addr_of(c.newest("fill0").node)
    p = c.cancel("pending", via=3)
    r = c.cancel("fill0", via=0)
    f = c.cancel("quick", via=1)
    nope = c.cancel("nope", via=2)
    c.run_for(2.0)
    assert p.ok and p.data["state"] == "cancelled", p.reply
    assert r.ok and r.data["state"] == "cancelled", r.reply
    assert not f.ok and "already succeeded" in f.error
    assert not nope.ok and "unknown task id" in nope.error
    assert c.runs_of("pending") == []
    stopped = [e for e in c.nodes[runner].executor.ended if e.exit.task_id == "fill0"]
    assert [e.exit.state for e in stopped] == [TaskState.CANCELLED]  # the run was killed
    settle(c)
    assert state_of(c, "pending") == state_of(c, "fill0") == TaskState.CANCELLED
    assert c.runs_of("pending") == []
    assert one_result(c, "fill0")[2] == TaskState.CANCELLED
    assert_clean(c, "fill0", "pending")


# ---------------------------------------------------------------------- the harness itself


def test_checkers_see_over_commit_at_once_lost_tasks_and_double_results():
    c = make(18, n=5)
    a = c.addrs[1]
    c.sim.call(a, on_core(lambda core, now: [
        StartTask("rogue", 1, task_spec(cpus=8.0))]))  # a run nobody committed, too big
    assert c.violations and c.violations[0].time == c.now  # seen at the instant it happened
    assert any("no commitment" in v for v in c.overcommit_violations())
    assert any("running" in v for v in c.overcommit_violations())
    # all r replicas of an accepted task fail at once: outside the guarantee, and seen as lost
    c.violations.clear()
    c.submit("doomed", task_spec(cpus=1, expected=30.0), via=0)
    c.run_for(0.2)
    assert c.accepted() == {"doomed": task_spec(cpus=1, expected=30.0)}
    for n in c.newest("doomed").replicas:
        c.crash(c.addr_of(n))
    c.run_for(10.0)
    assert c.lost_tasks() == ["doomed: no surviving copy"]
    c.core(c.up()[0]).placement.owner.committed_results += [
        ("x", 1, "n1", TaskState.SUCCEEDED), ("x", 2, "n2", TaskState.SUCCEEDED)]
    assert c.double_results() and c.double_results()[0].startswith("x:")


def test_runs_are_reproducible_bit_for_bit():
    def run() -> tuple:
        c = make(19, network=NetworkModel(loss=0.02))
        rng = random.Random(19)
        for i in range(40):
            c.submit(f"t{i}", task_spec(cpus=rng.choice([1, 2]), expected=rng.uniform(0.5, 3)),
                     via=rng.randrange(N), at=0.6 + i * 0.1)  # fmt: skip
        c.crash(3, at=2.0)
        c.pause(5, at=3.0)
        c.resume(5, at=9.0)
        settle(c)
        return c.sim.fingerprint(), sorted(c.commits().items()), c.stats()

    assert run() == run()


_REPRO = """
import random
from scenarios.sim.network import NetworkModel
from scenarios.sim.placement_cluster import PlacementCluster, task_spec
c = PlacementCluster(12, 5, network=NetworkModel(loss=0.02))
rng = random.Random(5)
for i in range(30):
    c.submit(f"t{i}", task_spec(cpus=rng.choice([1, 2]), expected=rng.uniform(0.5, 3)),
             via=rng.randrange(12), at=0.5 + i * 0.1)
    c.get(f"t{i}", via=rng.randrange(12), at=1.0 + i * 0.1)
for i in range(0, 30, 7):
    c.cancel(f"t{i}", via=rng.randrange(12), at=1.2 + i * 0.1)
c.crash(4, at=2.0)
c.pause(6, at=2.5)
c.resume(6, at=8.0)
c.settle(60)
print(c.sim.fingerprint(), sorted(c.commits().items()))
"""


def test_runs_are_reproduced_across_processes_whatever_the_hash_seed():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    outs = set()
    for hashseed in ("0", "1", "7"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(root)}
        r = subprocess.run([sys.executable, "-c", _REPRO], env=env, cwd=root, check=True,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        outs.add(r.stdout)
    assert len(outs) == 1, outs


def test_forecaster_and_background_traces_pass_through():
    from metalearn.peak_runtime import LastValuePeak
    from metalearn.peaks import PeakSpec

    rng = random.Random(20)
    traces = [BackgroundTrace([rng.uniform(0.1, 0.7) for _ in range(24)], step=2.0,
                              offset=rng.uniform(0, 48)) for _ in range(8)]  # fmt: skip
    cfg = dataclasses.replace(FAST_PLACEMENT, forecast_step=2.0, readapt_every=4,
                              forecast_horizons=(1, 2, 4))  # fmt: skip
    fc = LastValuePeak(PeakSpec(window=4, horizons=(1, 2, 4), day=8, context=8))
    c = PlacementCluster(8, 20, background=traces, placement=cfg, forecaster=fc,
                         sample_step=1.0)  # fmt: skip
    c.run_for(60.0)  # enough samples to adapt the forecaster on each node
    for i in range(40):
        c.submit(f"t{i}", task_spec(cpus=1, expected=rng.uniform(1, 4)), via=i % 8,
                 at=60.0 + i * 0.3)  # fmt: skip
    settle(c)
    assert c.states() == {"succeeded": 40}
    assert_clean(c)
    view = c.core(c.addrs[0]).membership
    forecasts = [view.record_of(n).forecast for n in c.ids]
    assert all(len(f) == 3 for f in forecasts) and len(set(forecasts)) > 1


# ---------------------------------------------------------------------- property-based

ROLES = ("owner", "winner", "replica2", "replica3", "owner+winner", "owner+replica2",
         "replica2+replica3", "random")  # fmt: skip
# the message whose handling triggers a failure (None: at a random time instead)
POINTS = (BidRequest, Bid, Award, AwardAck, TaskPut, TaskReport, ReportAck, None)


@st.composite
def schedules(draw, long_partition: bool = False):
    """Failures at random protocol points: each picks a task, the message kind whose handling
    triggers it (or a time), the role(s) to hit and what to do to them: crash, pause past
    failure detection (a failure that comes back), or cut them off from everyone for less than
    failure detection. At most r-1 nodes ever crash or pause: the guarantee's premise."""
    events = []
    failed = 0
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["crash", "pause", "partition"]))
        role = draw(st.sampled_from(ROLES))
        hits = role.count("+") + 1
        if what in ("crash", "pause"):
            if failed + hits > R - 1:
                what = "partition"
            else:
                failed += hits
        events.append((what, role, draw(st.integers(0, 29)), draw(st.sampled_from(POINTS)),
                       draw(st.floats(1.0, 12.0)), draw(st.floats(0.05, 0.3))))  # fmt: skip
    if long_partition:  # one split of the cluster lasting 1-3 failure-detection periods
        events.append(("split", "random", draw(st.integers(0, 29)),
                       draw(st.sampled_from(POINTS)), draw(st.floats(1.0, 10.0)),
                       draw(st.floats(1.0, 3.0))))  # fmt: skip
    loss = draw(st.sampled_from([0.0, 0.0, 0.02, 0.05]))
    return events, loss


def run_schedule(seed: int, schedule: tuple, n_tasks: int = 30) -> PlacementCluster:
    events, loss = schedule
    c = make(seed)
    c.sim.set_loss(loss)
    rng = random.Random(seed)
    for i in range(n_tasks):
        c.submit(f"t{i}", task_spec(cpus=rng.choice([0.5, 1, 2]), expected=rng.uniform(0.5, 4)),
                 via=rng.randrange(N), at=0.6 + rng.uniform(0, 10))  # fmt: skip
    for _ in range(4):
        c.cancel(f"t{rng.randrange(n_tasks)}", via=rng.randrange(N), at=1.0 + rng.uniform(0, 12))

    def targets(cl: PlacementCluster, tid: str, role: str) -> list[str]:
        rec = cl.newest(tid)
        reps = [cl.addr_of(x) for x in rec.replicas] if rec else []
        out = []
        for part in role.split("+"):
            if part == "owner" and reps:
                out.append(reps[0])
            elif part == "winner" and rec is not None and rec.node:
                out.append(cl.addr_of(rec.node))
            elif part.startswith("replica") and len(reps) >= int(part[-1]):
                out.append(reps[int(part[-1]) - 1])
            elif part == "random":
                out.append(rng.choice(cl.addrs))
        return out

    def act(cl: PlacementCluster, what: str, tid: str, role: str, length: float) -> None:
        now = cl.now
        if what == "split":  # two halves, the task's owner in the first
            first = targets(cl, tid, "owner") or [cl.addrs[0]]
            rest = [a for a in cl.addrs if a not in first]
            rng.shuffle(rest)
            side = first + rest[: N // 2 - 1]
            cl.sim.schedule(now, lambda s: cl.partition(side))
            cl.heal(at=now + length * cl.detection_time())
            return
        addrs = [a for a in dict.fromkeys(targets(cl, tid, role)) if cl.sim.state(a) == "live"]
        if not addrs:
            return
        if what == "crash":
            for a in addrs:
                cl.crash_soon(a)
        elif what == "pause":
            for a in addrs:
                cl.sim.schedule(now, lambda s, a=a: cl.pause(a))
                cl.resume(a, at=now + cl.detection_time() + length * 10)
        else:  # cut off mid-protocol for less than failure detection
            cl.sim.schedule(now, lambda s: cl.partition(addrs))
            cl.heal(at=now + length)

    for what, role, k, point, at, length in events:
        tid = f"t{k % n_tasks}"
        if point is None:
            c.sim.schedule(at, lambda s, w=what, t=tid, r=role, n=length: act(c, w, t, r, n))
            continue

        def trigger(cl, addr, now, msg, what=what, role=role, tid=tid, point=point,
                    length=length):  # fmt: skip
            b = msg.body if msg is not None else None
            if isinstance(b, point) and getattr(b, "task_id", getattr(
                    getattr(b, "record", None), "id", None)) == tid:  # fmt: skip
                act(cl, what, tid, role, length)
                return True
            return False

        c.watch(trigger)
    return c


def check_schedule(seed: int, schedule: tuple) -> PlacementCluster:
    c = run_schedule(seed, schedule)
    settle(c, timeout=200)  # waits for the heals and resumes scheduled meanwhile too
    return c


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(seed=st.integers(0, 10_000), schedule=schedules())
def test_property_failures_at_random_protocol_points_lose_nothing(seed, schedule):
    c = check_schedule(seed, schedule)
    problems = c.problems()
    assert not problems, (schedule, c.events, problems)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fixed examples: CI is reproducible
@given(seed=st.integers(0, 10_000), schedule=schedules())
def test_property_failures_at_random_protocol_points_many_more_examples(seed, schedule):
    c = check_schedule(seed, schedule)
    problems = c.problems()
    assert not problems, (schedule, c.events, problems)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), schedule=schedules(long_partition=True))
def test_property_long_partition_loses_nothing_and_converges(seed, schedule):
    """A split longer than failure detection: each side sees the other side's replicas fail at
    once. Only a side that sees a majority of the cluster alive moves tasks on (here the two
    halves are equal, so neither does until the heal): nothing lost, nothing over-committed,
    every result a real run's and recorded once, every cancel acknowledged one that held.
    Before the majority rule, a task could run and have its result recorded on both sides, and
    a cancel acknowledged on one side could lose to a result recorded on the other."""
    c = check_schedule(seed, schedule)
    assert not c.lost_tasks() and not c.overcommit_violations(), (schedule, c.events)
    assert not c.replica_disagreements() and not c.result_mismatches(), (schedule, c.events)
    assert not c.double_results() and not c.broken_cancels(), (schedule, c.events)


# ---------------------------------------------------------------------- submission via the owner


def _puts_and_holders_at_reply(c: PlacementCluster, tid: str, sub_box: list) -> tuple[list, list]:
    """Watch the submit of `tid`: every TaskPut delivered (sender, receiver, submission flag),
    and (once answered) the set of nodes holding a copy when the client was answered."""
    puts: list[tuple[str, str, bool]] = []
    held: list[set[str]] = []

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is not None and isinstance(msg.body, TaskPut) and msg.body.record.id == tid:
            puts.append((msg.sender_addr, addr, msg.body.submission))
        if sub_box and sub_box[0].reply is not None and not held:
            held.append(set(cl.copies(tid)))
        return False

    c.watch(watch)
    return puts, held


def test_a_submit_goes_to_the_owner_alone_which_answers_once_every_replica_holds_it():
    c = make(21)
    tid = zone_a_task_id(c, "s")
    owner, *others = (c.addr_of(n) for n in preference(c, tid))
    entry = next(a for a in c.addrs if a not in (owner, *others))
    box: list = []
    puts, held = _puts_and_holders_at_reply(c, tid, box)
    box.append(c.submit(tid, task_spec(cpus=1, expected=0.5), via=entry))
    settle(c)
    assert box[0].ok and box[0].data["existing"] is False
    from_entry = [(to, flag) for src, to, flag in puts if src == entry]
    assert from_entry == [(owner, True)]  # one put: the submission, to the owner
    # the owner's own push is the replication; the client is answered once it is done
    assert {(src, to) for src, to, _ in puts if src == owner} >= {(owner, o) for o in others}
    assert held and held[0] >= {c.addr_of(n) for n in preference(c, tid)}
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    assert_clean(c, tid)


def test_an_owner_that_cannot_confirm_in_time_leaves_the_entry_to_ask_each_replica():
    """The owner's pushes to one replica are lost: it cannot answer for the others. After
    `put_timeout` the entry asks the owner once more, alone (an owner is most often just slow),
    and after another the entry sends the record to every replica itself and answers from their
    own acks (the owner answers for itself at once this time)."""
    c = make(22)
    tid = zone_a_task_id(c, "u")
    owner, second, third = (c.addr_of(n) for n in preference(c, tid))
    entry = next(a for a in c.addrs if a not in (owner, second, third))
    c.sim.network.set_link(owner, second, loss=1.0, symmetric=False)
    box: list = []
    puts, _ = _puts_and_holders_at_reply(c, tid, box)
    box.append(sub := c.submit(tid, task_spec(cpus=1, expected=0.5), via=entry))
    c.run_for(FAST_PLACEMENT.put_timeout / 2)
    assert sub.reply is None  # the owner's ack would have come within a few milliseconds
    c.run_for(FAST_PLACEMENT.put_timeout)
    assert sub.reply is None
    assert [(to, flag) for src, to, flag in puts if src == entry] == [(owner, True)] * 2
    c.run_for(FAST_PLACEMENT.put_timeout)
    assert sub.ok, sub.error
    # the owner had placed it meanwhile, and the replicas acknowledge that copy: still the
    # entry's own new task, not one that existed before
    assert sub.data["existing"] is False and sub.data["state"] == "pending", sub.data
    assert {to for src, to, flag in puts if src == entry and not flag} == {owner, second, third}
    c.sim.network.clear_link(owner, second, symmetric=False)
    settle(c)
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    assert_clean(c, tid)


def test_an_entry_whose_owner_changed_asks_every_replica_at_once():
    """The owner died after the submission reached it, and the entry saw it declared failed
    before its re-send was due: the re-send goes to every replica (the next owner among them),
    not to the dead owner alone."""
    placement = dataclasses.replace(FAST_PLACEMENT, put_timeout=3.0, submit_timeout=8.0)
    c = make(26, placement=placement)
    tid = zone_a_task_id(c, "z")
    owner, second, third = (c.addr_of(n) for n in preference(c, tid))
    entry = next(a for a in c.addrs if a not in (owner, second, third))
    c.sim.network.set_link(owner, second, loss=1.0, symmetric=False)  # it cannot confirm
    box: list = []
    puts, _ = _puts_and_holders_at_reply(c, tid, box)
    box.append(sub := c.submit(tid, task_spec(cpus=1, expected=0.5), via=entry))
    c.run_for(0.05)
    c.crash(owner)
    dead = c.ids[c.addrs.index(owner)]
    seen = c.sim.run_until_true(lambda: not c.core(entry).placement.ctx.is_live(dead), 30.0, 0.01)
    assert seen is not None and seen < sub.at + placement.put_timeout
    c.sim.run_until(sub.at + placement.put_timeout + 0.05)
    assert [(to, flag) for src, to, flag in puts if src == entry] == [
        (owner, True), (second, False), (third, False)]  # fmt: skip
    settle(c)
    # the record names the dead owner among its replicas, which never confirms: the submit says
    # so, and a new owner carries the task on from the copies it holds
    assert not sub.ok and "2 of 3 replicas" in sub.error
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    assert_clean(c, tid)


def test_a_runner_resends_its_result_to_the_owner_alone_once_then_to_every_replica():
    """The owner cannot replicate the result in time (its pushes to one replica are lost), so
    the runner re-sends it: once more to the same owner alone (the other replicas would drop
    it), then to every replica, since ownership may have moved without the runner seeing it."""
    c = make(27, placement=BID_ROUNDS)
    tid = zone_a_task_id(c, "r")
    owner, second, third = (c.addr_of(n) for n in preference(c, tid))
    reports: list[tuple[float, str]] = []

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is not None and isinstance(msg.body, TaskReport) and msg.body.task_id == tid \
                and msg.body.state.terminal:  # fmt: skip
            reports.append((now, addr))
        return False

    c.watch(watch)
    c.submit(tid, task_spec(cpus=1, expected=0.5, labels={"zone": "b"}))  # runs in zone b
    wait_state(c, tid, TaskState.PLACED, TaskState.RUNNING)
    c.sim.network.set_link(owner, second, loss=1.0, symmetric=False)
    t = c.sim.run_until_true(lambda: len(reports) >= 4, 30.0, 0.01)
    assert t is not None, c.describe(tid)
    first, again, *wide = reports
    assert first[1] == owner and again[1] == owner, reports
    assert {a for _, a in wide[:3]} == {owner, second, third}, reports
    assert again[0] - first[0] >= FAST_PLACEMENT.report_retry * 0.99
    c.sim.network.clear_link(owner, second, symmetric=False)
    settle(c)
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    assert_clean(c, tid)


def test_an_ack_for_all_replicas_counts_only_from_the_owner_that_was_asked():
    """Another replica (or any peer) saying "every replica holds it" is not taken for the
    owner's word: the client is answered only when the owner answers."""
    c = make(23)
    tid = zone_a_task_id(c, "v")
    owner, second, third = (c.addr_of(n) for n in preference(c, tid))
    entry = next(a for a in c.addrs if a not in (owner, second, third))
    c.sim.network.set_link(entry, owner, latency=0.2)  # the submission reaches the owner late
    sub = c.submit(tid, task_spec(cpus=1, expected=0.5), via=entry)
    forged = TaskPutAck(tid, 1, TaskState.PENDING, all_replicas=True)
    c.inject(entry, second, forged, at=c.now + 0.01)
    c.run_for(0.1)
    assert sub.reply is None
    c.sim.network.clear_link(entry, owner)
    settle(c)
    assert sub.ok
    assert one_result(c, tid)[2] == TaskState.SUCCEEDED
    assert_clean(c, tid)


def test_a_submit_its_owner_never_answers_fails_with_the_id_to_resubmit_with():
    """With `submit_timeout` below `put_timeout` the entry never gets to ask the replicas
    itself: the error says that the owner did not confirm, and how to retry."""
    placement = dataclasses.replace(FAST_PLACEMENT, put_timeout=2.0, submit_timeout=1.0)
    c = make(24, placement=placement)
    tid = zone_a_task_id(c, "w")
    owner, second, third = (c.addr_of(n) for n in preference(c, tid))
    entry = next(a for a in c.addrs if a not in (owner, second, third))
    c.sim.network.set_link(entry, owner, loss=1.0, symmetric=False)
    sub = c.submit(tid, task_spec(cpus=1, expected=0.5), via=entry)
    c.run_for(1.5)
    assert not sub.ok
    assert sub.error == (f"task {tid}: its owner did not confirm that its replicas hold it; "
                         f"submit again with --id {tid} to retry")  # fmt: skip


def test_a_held_back_ack_hands_over_a_copy_another_node_wrote_meanwhile():
    """A replica holds back its ack of A's placed version; B's copy of the same version
    outranks it before the ack is due. The ack A then gets comes with B's copy: an ack alone
    (same version, same state) would have let A believe the replica holds its own."""
    c = make(25)
    tid = zone_a_task_id(c, "y")
    p0, p1, p2 = preference(c, tid)
    a, b = sorted((p0, p2))  # at equal versions the higher writer id wins (`records.rank`)
    replica = c.addr_of(p1)
    spec = task_spec(cpus=1, expected=5.0, labels={"zone": "b"})
    v1 = TaskRecord(tid, spec, TaskState.PENDING, 1, p0, (p0, p1, p2), submitted=c.now)
    runner = c.ids[min(ZONE_B)]

    def placed(writer: str) -> TaskRecord:
        return dataclasses.replace(v1, version=2, writer=writer, state=TaskState.PLACED,
                                   attempt=1, node=runner, node_addr=c.addr_of(runner))

    got: list[TaskRecord] = []

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is not None and addr == c.addr_of(a) and msg.sender_addr == replica and (
            isinstance(msg.body, TaskGetReply) and msg.body.record is not None
        ):
            got.append(msg.body.record)
        return False

    c.watch(watch)
    t = c.now
    c.inject(replica, c.addr_of(p0), TaskPut(v1), at=t + 0.001)
    c.inject(replica, c.addr_of(a), TaskPut(placed(a)), at=t + 0.002)
    c.inject(replica, c.addr_of(b), TaskPut(placed(b)), at=t + 0.003)
    c.run_for(0.05)
    assert got == []  # the ack to `a` is still held back
    c.run_for(0.2)
    assert [r.writer for r in got] == [b], got
