"""A bounded member table, and failed and left members forgotten (issue 9, finding 6).

3,000 fake `alive` members in one gossip message used to be taken in whole and kept forever:
every probe round went mostly to nodes that do not exist, and nothing ever removed them.
"""

from __future__ import annotations

import random

from gossip.config import SwimConfig
from gossip.membership import Membership
from gossip.messages import Gossip, GossipOnly, MemberUpdate, Message, Status
from scenarios.sim import Simulator
from scenarios.sim.cluster import build_swim_cluster, converged, node_id

N = 10
CFG = SwimConfig(max_members=64, reap_failed_after=60.0, reap_left_after=60.0)


def _cluster(seed: int = 7) -> tuple[Simulator, list[str]]:
    sim = Simulator(seed)
    addrs = build_swim_cluster(sim, N, seed, CFG)
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=60, check_every=0.5)
    return sim, addrs


def _flood(sim: Simulator, at: str, n: int) -> None:
    fakes = tuple(MemberUpdate(f"fake{i}", f"sim://fake{i}", 0, Status.ALIVE) for i in range(n))
    msg = Message("mallory", "sim://mallory", 0, GossipOnly(Gossip(fakes)))
    sim.call(at, lambda c, now: c.on_message(now, msg))


def _fakes_known(sim: Simulator, addrs: list[str]) -> int:
    return max(sum(n.startswith("fake") for n in sim.core(a).known_nodes()) for a in addrs
               if sim.is_up(a))  # fmt: skip


def test_3000_fake_members_are_bounded_real_members_still_probed_and_fakes_reaped():
    sim, addrs = _cluster()
    _flood(sim, addrs[0], 3000)
    core = sim.core(addrs[0])
    assert len(core.known_nodes()) == CFG.max_members
    assert core.stats["members_refused"] == 3000 - (CFG.max_members - N)
    sim.run_for(5.0)
    assert all(len(sim.core(a).known_nodes()) <= CFG.max_members for a in addrs)
    # failure detection of real members goes on: a crash is still declared by everyone
    sim.crash(addrs[4])
    t = sim.run_until_true(
        lambda: all(sim.core(a).status_of(node_id(addrs[4])) == Status.DEAD
                    for a in addrs if sim.is_up(a)),  # fmt: skip
        timeout=60, check_every=0.5)  # fmt: skip
    assert t is not None
    # fakes never answer: they fail, and are forgotten after reap_failed_after
    sim.run_for(CFG.reap_failed_after + 60.0)
    assert _fakes_known(sim, addrs) == 0
    up = [a for a in addrs if sim.is_up(a)]
    assert all(set(sim.core(a).known_nodes()) == {node_id(x) for x in up} for a in up)
    assert all(sim.core(a).status_of(node_id(x)) == Status.ALIVE for a in up for x in up)


def test_a_reaped_node_that_comes_back_is_admitted_as_new():
    sim, addrs = _cluster(seed=8)
    victim = addrs[6]
    sim.crash(victim)
    sim.run_for(CFG.reap_failed_after + 30.0)
    assert all(sim.core(a).member(node_id(victim)) is None for a in addrs if a != victim)
    core = Membership(node_id(victim), victim, random.Random("again"), CFG, generation=1)
    sim.add_node(victim, core)
    sim.call(victim, lambda c, now: c.join(now, [addrs[0]]))
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=30, check_every=0.5)


def test_left_members_are_forgotten_after_reap_left_after():
    sim, addrs = _cluster(seed=9)
    leaver = addrs[3]
    sim.call(leaver, lambda c, now: c.leave(now))
    sim.run_for(CFG.leave_linger + 5.0)
    sim.crash(leaver)  # the process exits after lingering
    assert all(sim.core(a).status_of(node_id(leaver)) == Status.LEFT
               for a in addrs if a != leaver)  # fmt: skip
    sim.run_for(CFG.reap_left_after + 30.0)
    assert all(sim.core(a).member(node_id(leaver)) is None for a in addrs if a != leaver)
    assert sum(sim.core(a).stats["reaped"] for a in addrs if a != leaver) == N - 1
