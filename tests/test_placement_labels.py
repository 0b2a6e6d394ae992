"""Labels set on a running node reach its own bidder (issue 9, finding 4: `agora label k=v` was
gossiped, but the node's bidder kept the labels it started with, so a task asking for the new
label stayed pending forever)."""

from __future__ import annotations

from agent.tasks import TaskState
from scenarios.sim.placement_cluster import GiB, NodeShape, PlacementCluster, task_spec


def test_a_label_set_at_run_time_lets_the_node_win_tasks_asking_for_it() -> None:
    c = PlacementCluster(6, 3, shape=NodeShape(cpus=4.0, memory=16 * GiB))
    c.run_for(0.5)
    target = c.addrs[4]
    c.sim.call(target, lambda node, now: node.core.membership.update_resources(
        now, labels={"gpu": "a100"}))  # what the agent's set_labels query does
    c.run_for(3.0)  # gossiped
    sub = c.submit("needs-label", task_spec(labels={"gpu": "a100"}, expected=1.0), via=0)
    assert c.settle(30.0), c.describe("needs-label")
    rec = c.newest("needs-label")
    assert sub.ok and rec.state == TaskState.SUCCEEDED and rec.node == "n4", c.describe(
        "needs-label")
    assert c.problems() == {}
