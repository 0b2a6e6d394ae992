"""Bounded task records (issue 9, findings 5 and 9): versions cannot be pushed to overflow,
terminal records are collected after a retention, and the records an agent holds are capped."""

from __future__ import annotations

import dataclasses

import pytest

from agent.messages import TaskPut, TaskReport
from agent.tasks import TaskState
from gossip import wire
from gossip.messages import Message
from scenarios.sim.placement_cluster import FAST_PLACEMENT, NodeShape, PlacementCluster, task_spec

TOP = 2**63 - 1


def test_a_forged_task_version_at_the_top_of_the_integers_is_refused_and_the_task_finishes():
    c = PlacementCluster(8, 3, encode_messages=True)
    c.run_for(0.5)
    spec = task_spec(expected=3.0)
    c.submit("t", spec, via=0)
    c.run_for(1.0)
    rec = c.newest("t")
    assert rec is not None and not rec.state.terminal
    forged = dataclasses.replace(rec, version=TOP)
    for n in rec.replicas:  # every replica, the owner included
        c.inject(c.addr_of(n), next(a for a in c.addrs if a != c.addr_of(n)), TaskPut(forged))
    assert c.settle(60.0), c.describe("t")
    assert c.newest("t").state == TaskState.SUCCEEDED
    assert c.newest("t").version < 1000
    assert c.stats()["implausible_task_versions"] == len(rec.replicas)
    assert not c.problems()


# ---------------------------------------------------------------------- retention (finding 9)

KEEP = 20.0
RETAIN = dataclasses.replace(FAST_PLACEMENT, retention=KEEP, tombstone_retention=1000.0)


def _held(c: PlacementCluster) -> tuple[int, int]:
    """Records held over the cluster, and the bytes they take on the wire."""
    n = size = 0
    for core in c.cores():
        for rec in core.placement.owner.store.records.values():
            n += 1
            size += len(wire.encode(Message("x", "sim://x", 0, TaskPut(rec))))
    return n, size


def _run_many(c: PlacementCluster, n: int, rate: float, prefix: str = "t") -> float:
    start = c.now
    for i in range(n):
        c.submit(f"{prefix}{i}", task_spec(cpus=0.5, expected=0.2), via=i % len(c.addrs),
                 at=start + i / rate)  # fmt: skip
    return start + n / rate


@pytest.mark.slow
def test_10000_chatty_tasks_leave_a_bounded_record_store_after_retention():
    c = PlacementCluster(10, 11, placement=RETAIN)
    for node in c.nodes.values():
        node.executor.stdout_bytes = 4096
    c.run_for(0.5)
    end = _run_many(c, 10_000, rate=50.0)
    peak = 0
    while c.now < end:
        c.run_for(10.0)
        peak = max(peak, _held(c)[0])
    c.run_for(10.0)
    assert all(r.ok for r in c.submits()), [r.error for r in c.submits() if not r.ok][:3]
    assert c.states() == {"succeeded": 10_000}  # collected tasks count as what they ended
    # at 50 tasks/s and 20 s of retention, each of the 3 replicas holds ~1,000 records at most
    assert peak < 3 * 50 * (KEEP + 10.0) * 1.3
    c.run_for(KEEP + 10.0)
    held, size = _held(c)
    assert held == 0 and size == 0
    tombs = sum(len(core.placement.owner.store.tombstones) for core in c.cores())
    assert tombs == 3 * 10_000  # one small tombstone per replica, until tombstone_retention
    assert not c.problems()
    c.run_for(RETAIN.tombstone_retention)
    assert sum(len(core.placement.owner.store.tombstones) for core in c.cores()) == 0


def test_late_reports_and_stale_copies_of_a_collected_task_do_nothing():
    c = PlacementCluster(8, 12, placement=RETAIN)
    c.run_for(0.5)
    c.submit("t", task_spec(expected=1.0), via=0)
    c.run_for(0.3)
    stale = c.newest("t")  # a copy from before the task ended
    assert stale is not None and not stale.state.terminal
    c.run_for(5.0)
    done = c.newest("t")
    assert done.state == TaskState.SUCCEEDED
    c.run_for(KEEP + 5.0)
    assert c.newest("t") is None  # collected on every replica
    runs = len(c.runs_of("t"))
    runner = c.addr_of(done.node)
    late = TaskReport("t", done.attempt, TaskState.SUCCEEDED, finished=done.finished)
    for n in done.replicas:
        c.inject(c.addr_of(n), runner, late)
        c.inject(c.addr_of(n), runner, TaskPut(stale))  # a stale copy pushed again
    c.submit("t", task_spec(expected=1.0), via=3)  # and a resubmission of the same id
    c.run_for(10.0)
    assert c.newest("t") is None and len(c.runs_of("t")) == runs  # not resurrected, not re-run
    s = c.stats()
    assert s["reports_for_collected"] == len(done.replicas)
    assert s["puts_for_collected"] >= len(done.replicas)
    assert not c.submits()[-1].ok and "collected" in c.submits()[-1].error
    # status says what happened to it, asked of a replica (which keeps the tombstone) or not
    replica = c.addr_of(done.replicas[0])
    other = next(a for a in c.addrs if c.core(a).node_id not in done.replicas)
    asked = [c.get("t", via=replica), c.get("t", via=other)]
    c.run_for(5.0)
    assert asked[0].reply is not None and "succeeded; its record was collected" in asked[0].reply[2]
    assert asked[1].reply is not None and "forgotten" in asked[1].reply[2]


def test_a_replica_holding_too_many_unfinished_records_refuses_new_ones():
    cfg = dataclasses.replace(FAST_PLACEMENT, max_active_records=5)
    c = PlacementCluster(3, 13, placement=cfg, shape=NodeShape(cpus=1.0))
    c.run_for(0.5)
    for i in range(8):  # 3 nodes, 3 replicas: every node holds every record
        c.submit(f"long{i}", task_spec(cpus=1.0, expected=30.0), via=0, at=c.now + 0.01 * i)
    c.run_for(3.0)
    ok = [r for r in c.submits() if r.ok]
    refused = [r for r in c.submits() if not r.ok]
    assert len(ok) == 5 and len(refused) == 3
    assert all("unfinished" in r.error for r in refused)
    assert c.stats()["records_refused"] >= 3
    assert all(len(core.placement.owner.store.records) == 5 for core in c.cores())


def test_one_client_cannot_fill_an_agent_by_itself():
    """Tasks per client: alice's unfinished tasks beyond the bound are refused; bob's are not."""
    cfg = dataclasses.replace(FAST_PLACEMENT, max_tasks_per_client=4)
    c = PlacementCluster(3, 14, placement=cfg, shape=NodeShape(cpus=1.0))
    c.run_for(0.5)
    for i in range(6):
        c.submit(f"alice{i}", dataclasses.replace(task_spec(cpus=0.1, expected=30.0),
                                                  submitter="alice"), via=0, at=c.now + 0.01 * i)
    for i in range(2):
        c.submit(f"bob{i}", dataclasses.replace(task_spec(cpus=0.1, expected=30.0),
                                                submitter="bob"), via=1, at=c.now + 0.1 + 0.01 * i)
    c.run_for(3.0)
    refused = [r for r in c.submits() if not r.ok]
    assert sorted(r.task_id for r in refused) == ["alice4", "alice5"]
    assert all("max_tasks_per_client" in r.error for r in refused)
    assert c.stats()["records_refused_per_client"] >= 2
