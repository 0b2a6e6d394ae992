"""Direct awards: a task is awarded without a bid round when gossip shows the policy's first
choice roomy. Gossip lags, so several owners may award the same node at once: the worker's
ledger still refuses what does not fit, and the refused task goes through a bid round.
"""

from __future__ import annotations

import dataclasses

import pytest

from scenarios.sim.placement_cluster import FAST_PLACEMENT, NodeShape, PlacementCluster, task_spec

NODES = 4


def _burst(seed: int, policy: str, tasks: int, cpus: float) -> PlacementCluster:
    """`tasks` tasks submitted at one instant through every entry in turn, on nodes of 2 CPUs
    whose gossip still shows them empty."""
    c = PlacementCluster(NODES, seed, shape=NodeShape(cpus=2.0),
                         placement=dataclasses.replace(FAST_PLACEMENT, policy=policy))
    c.run_for(1.0)
    at = c.now + 0.1
    for i in range(tasks):
        c.submit(f"t{i}", task_spec(cpus=cpus, expected=3.0), via=i % NODES, at=at)
    assert c.settle(120.0)
    return c


@pytest.mark.parametrize("policy", ["predictive", "least-loaded", "sparrow", "round-robin"])
@pytest.mark.parametrize("seed", range(4))
def test_colliding_direct_awards_are_refused_and_negotiated_without_overcommit(seed, policy):
    c = _burst(seed, policy, tasks=14, cpus=0.5)  # 7 of the cluster's 8 CPUs
    assert c.states() == {"succeeded": 14}
    assert not c.problems()  # no over-commit, nothing lost, no task run twice
    s = c.stats()
    assert s["direct_awards"] > 0


def test_a_refused_direct_award_is_followed_by_a_bid_round():
    """Over seeds, the predictive owners' first choices collide (every node looks alike), so
    some awards are refused; each refused task then negotiates and still runs once."""
    refused = rounds = 0
    for seed in range(6):
        c = _burst(seed, "predictive", tasks=14, cpus=0.5)
        assert c.states() == {"succeeded": 14}
        assert not c.problems()
        s = c.stats()
        refused += s["direct_awards_refused"]
        rounds += s["bid_requests"]
        assert s["direct_awards_refused"] <= s["awards_refused"]
    assert refused > 0
    assert rounds > 0


def test_a_busy_cluster_negotiates():
    """A task that would leave its node less than `direct_award_room` free is not awarded
    directly: 1.5 of 2 CPUs leaves a quarter."""
    c = _burst(0, "predictive", tasks=3, cpus=1.5)
    assert c.states() == {"succeeded": 3}
    assert not c.problems()
    s = c.stats()
    assert s["direct_awards"] == 0
    assert s["bid_requests"] >= 3
