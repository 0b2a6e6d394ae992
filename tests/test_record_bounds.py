"""Bounded task records (issue 9, findings 5 and 9): versions cannot be pushed to overflow,
terminal records are collected after a retention, and the records an agent holds are capped."""

from __future__ import annotations

import dataclasses

from gossip.messages import TaskPut, TaskState
from scenarios.sim.placement_cluster import PlacementCluster, task_spec

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
