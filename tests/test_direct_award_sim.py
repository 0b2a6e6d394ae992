"""Direct awards: a task is awarded without a bid round when gossip shows the policy's first
choice roomy. Gossip lags, so several owners may award the same node at once: the worker's
ledger still refuses what does not fit, and the refused task goes through a bid round.
"""

from __future__ import annotations

import collections
import dataclasses

import pytest

from agent.messages import Award, TaskPut, TaskPutAck
from agent.ring import HashRing
from agent.tasks import TaskRecord, TaskState
from scenarios.sim.background import BackgroundTrace
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


# ---------------------------------------------------------------------- placed on submission

def _quiet(seed: int) -> PlacementCluster:
    c = PlacementCluster(8, seed, shape=NodeShape(cpus=4.0), placement=FAST_PLACEMENT)
    c.run_for(1.0)
    return c


def _replicas(c: PlacementCluster, tid: str) -> list[str]:
    return [c.addr_of(n) for n in HashRing(c.ids).preference(tid, 3)]


def _awards_from(c: PlacementCluster, src: str, tid: str) -> list[float]:
    """When each `Award` for `tid` sent by `src` was delivered (a list filled as they are)."""
    seen: list[float] = []

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is not None and msg.sender_addr == src and isinstance(msg.body, Award) \
                and msg.body.record.id == tid:  # fmt: skip
            seen.append(now)
        return False

    c.watch(watch)
    return seen


def test_a_new_task_is_placed_at_once_and_awarded_once_its_replicas_confirm():
    """The replicas' first copy is the placed version; the run starts after their acks."""
    c = _quiet(1)
    tid = "p0"
    owner, *others = _replicas(c, tid)
    puts: list[str] = []
    acked: dict[str, float] = {}

    def watch(cl, addr, now, msg):  # noqa: ANN001, ANN202
        if msg is None:
            return False
        b = msg.body
        if msg.sender_addr == owner and isinstance(b, TaskPut) and b.record.id == tid:
            puts.append(b.record.state.label)
        if addr == owner and isinstance(b, TaskPutAck) and b.task_id == tid \
                and b.state == TaskState.PLACED:  # fmt: skip
            acked.setdefault(msg.sender_addr, now)
        return False

    c.watch(watch)
    sub = c.submit(tid, task_spec(cpus=0.5, expected=0.5), via=next(
        a for a in c.addrs if a not in _replicas(c, tid)))  # fmt: skip
    assert c.settle(30.0)
    assert sub.ok and sub.data["existing"] is False and sub.data["state"] == "pending"
    assert puts[:2] == ["placed", "placed"], puts  # no push of the pending version
    runs = c.runs_of(tid)
    assert len(runs) == 1 and not c.problems()
    assert set(acked) == set(others) and runs[0][2] >= max(acked.values()), (acked, runs)


def test_an_award_waits_for_every_replica_and_a_new_owner_carries_the_placement_on():
    """One replica never gets the placed copy: the owner awards nothing while it waits, and
    when it dies the next owner learns the placement from the replica that has it (the
    entry's own puts reach the others) and awards that same attempt: the task runs once."""
    c = _quiet(2)
    tid = "p1"
    owner, second, third = _replicas(c, tid)
    entry = next(a for a in c.addrs if a not in (owner, second, third))
    c.sim.network.set_link(owner, second, loss=1.0, symmetric=False)
    awards = _awards_from(c, owner, tid)
    sub = c.submit(tid, task_spec(cpus=0.5, expected=0.5), via=entry)
    c.run_for(2.0)
    assert awards == [] and c.runs_of(tid) == []
    held = c.core(third).placement.owner.store.records[tid]
    assert held.state == TaskState.PLACED and held.attempt == 1
    c.crash(owner)
    assert c.settle(60.0)
    runs = c.runs_of(tid)
    assert [(n, att) for n, att, _ in runs] == [(held.node, 1)], runs
    assert c.newest(tid).state == TaskState.SUCCEEDED
    assert not c.problems()
    assert sub.reply is not None  # answered (the dead owner never confirms: an error naming it)


def test_a_copy_that_outranks_the_placement_on_submission_wins_without_an_award():
    """A replica already holds a newer copy under the same id (here forged to a finished one):
    the owner's placed version loses there, the owner adopts that copy, and nothing runs."""
    c = _quiet(3)
    tid = "p2"
    owner, second, third = _replicas(c, tid)
    spec = task_spec(cpus=0.5, expected=0.5)
    done = TaskRecord(tid, spec, TaskState.SUCCEEDED, 5, c.ids[c.addrs.index(second)],
                      tuple(c.ids[c.addrs.index(a)] for a in (owner, second, third)),
                      attempt=1, node=c.ids[c.addrs.index(third)], finished=c.now)  # fmt: skip
    c.core(second).placement.owner.store.put(c.now, done)
    awards = _awards_from(c, owner, tid)
    sub = c.submit(tid, spec, via=next(a for a in c.addrs if a not in (owner, second, third)))
    assert c.settle(30.0)
    assert awards == [] and c.runs_of(tid) == []
    assert sub.ok and sub.data["existing"] is True and sub.data["state"] == "succeeded"
    assert c.newest(tid).version >= 5


@pytest.mark.parametrize("policy", ["predictive", "least-loaded"])
def test_owners_ranking_the_same_stale_gossip_do_not_all_award_the_same_node(policy):
    """Ten nodes whose background loads differ a little (10-19 %) and a burst of 200 small
    tasks at one instant, before any gossip can show where they went: the best node by the
    gossip would get every task (80 % of them fit there), a draw of d nodes first spreads
    them (the best node's expected share is a fifth: 47 of 200 here)."""
    n = 10
    c = PlacementCluster(n, 5, shape=NodeShape(cpus=16.0),
                         background=lambda i: BackgroundTrace([0.10 + 0.01 * i]),
                         placement=dataclasses.replace(FAST_PLACEMENT, policy=policy))  # fmt: skip
    c.run_for(3.0)
    at = c.now + 0.1
    for i in range(200):
        c.submit(f"h{i}", task_spec(cpus=0.1, expected=5.0), via=i % n, at=at)
    assert c.settle(120.0)
    assert c.states() == {"succeeded": 200} and not c.problems()
    per_node = collections.Counter(node for t in range(200) for node, _, _ in c.runs_of(f"h{t}"))
    assert max(per_node.values()) <= 60, per_node
    assert c.stats()["direct_awards"] >= 150


def test_a_node_whose_background_fills_it_is_not_awarded_without_a_round():
    """Nothing is allocated anywhere, but every node's background load (70 %) leaves it less
    than `direct_award_room` free: each task negotiates, so the bidders' own forecasts weigh."""
    c = PlacementCluster(NODES, 0, shape=NodeShape(cpus=2.0),
                         background=lambda i: BackgroundTrace([0.7]))  # fmt: skip
    c.run_for(3.0)
    for i in range(4):
        c.submit(f"b{i}", task_spec(cpus=0.25, expected=3.0), via=i % NODES, at=c.now + 0.1)
    assert c.settle(120.0)
    assert c.states() == {"succeeded": 4} and not c.problems()
    s = c.stats()
    assert s["direct_awards"] == 0
    assert s["bid_requests"] >= 4


@pytest.mark.parametrize("policy", ["predictive", "least-loaded"])
def test_owners_ranking_the_same_stale_gossip_do_not_all_ask_the_same_bidders(policy):
    """The bid path's twin of the test above: backgrounds of 60-69 % leave no node roomy
    enough for a direct award, so all 200 tasks negotiate at one instant. Asking the top d
    of all, every round asked the same two nodes; each owner's rounds on one stale view are
    drawn from a shrinking random share of the cluster instead. Here predictive ran 10-29
    tasks per node, against 100 on each of two; least-loaded, whose winner is the lowest
    background whatever it was given, 3-74 (its best node is in about 62 of the 200
    pools), against 160 and 40."""
    n = 10
    c = PlacementCluster(n, 5, shape=NodeShape(cpus=16.0),
                         background=lambda i: BackgroundTrace([0.60 + 0.01 * i]),
                         placement=dataclasses.replace(FAST_PLACEMENT, policy=policy))  # fmt: skip
    c.run_for(3.0)
    at = c.now + 0.1
    for i in range(200):
        c.submit(f"b{i}", task_spec(cpus=0.1, expected=5.0), via=i % n, at=at)
    assert c.settle(120.0)
    assert c.states() == {"succeeded": 200} and not c.problems()
    per_node = collections.Counter(node for t in range(200) for node, _, _ in c.runs_of(f"b{t}"))
    s = c.stats()
    assert s["direct_awards"] == 0 and s["bid_requests"] >= 400
    assert len(per_node) >= 8 and max(per_node.values()) <= 80, per_node


@pytest.mark.parametrize("policy", ["predictive", "least-loaded"])
def test_a_quiet_owner_still_asks_the_best_nodes_of_the_whole_cluster(policy):
    """One task at a time, each after the last one's award could show in gossip: no round is
    drawn from a share of the cluster, so every task negotiates with the two best nodes and
    runs on the best (a draw of two at random would find it one time in five)."""
    n = 10
    c = PlacementCluster(n, 3, shape=NodeShape(cpus=16.0),
                         background=lambda i: BackgroundTrace([0.60 + 0.01 * i]),
                         placement=dataclasses.replace(FAST_PLACEMENT, policy=policy))  # fmt: skip
    c.run_for(3.0)
    for i in range(12):
        c.submit(f"q{i}", task_spec(cpus=0.1, expected=0.3), via=i % n, at=c.now + 0.1 + 1.5 * i)
    assert c.settle(120.0)
    assert c.states() == {"succeeded": 12} and not c.problems()
    runners = {node for t in range(12) for node, _, _ in c.runs_of(f"q{t}")}
    assert runners == {"n0"}
    assert c.stats()["bid_pools_drawn"] == 0


def test_an_owner_forgets_what_it_awarded_to_nodes_that_have_left():
    """An owner counts its direct awards against a node until gossip can show them, and
    forgot them only when it next weighed that node: awards to a node that then crashed for
    good stayed counted for as long as the owner lived. With nothing of its own still
    hidden from gossip, the owner's next placement counts only itself."""
    n = 10
    c = PlacementCluster(n, 2, shape=NodeShape(cpus=16.0),
                         placement=dataclasses.replace(FAST_PLACEMENT, policy="least-loaded"))
    c.run_for(3.0)
    at = c.now + 0.1
    for i in range(100):
        c.submit(f"a{i}", task_spec(cpus=0.1, expected=1.0), via=i % n, at=at)
    c.run_for(0.2)
    held = {c.core(a).node_id: c.core(a).placement.owner.negotiator for a in c.addrs}
    counted = collections.Counter(node for neg in held.values() for node in neg._awarded)
    gone_node = counted.most_common(1)[0][0]  # the node most owners count awards against
    c.crash(c.addr_of(gone_node))
    assert c.settle(120.0)
    live = [i for i in c.ids if i != gone_node]
    owners = [o for o, neg in held.items() if gone_node in neg._awarded and o != gone_node]
    assert owners
    for k, owner in enumerate(owners):
        tid = next(t for t in (f"later{k}-{j}" for j in range(1000))
                   if HashRing(live).preference(t, 1) == [owner])  # fmt: skip
        c.submit(tid, task_spec(cpus=0.1, expected=1.0), via=c.addr_of(owner), at=c.now + 0.1)
        assert c.settle(30.0)
        assert gone_node not in held[owner]._awarded, owner
    assert c.states() == {"succeeded": 100 + len(owners)} and not c.problems()
