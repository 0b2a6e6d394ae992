"""Incarnations and resource record versions cannot be pushed to overflow (issue 9, finding 5).

A forged claim about a member at an incarnation (or record version) far ahead of what any clock
allows used to be taken in; the victim's answer one above it could then no longer be encoded
(the wire's integers stop at 2^63 - 1), and it stayed evicted for good, even after a restart.
"""

from __future__ import annotations

import random

from gossip.config import SwimConfig
from gossip.membership import GEN_SHIFT, MAX_GENERATION, Membership
from gossip.messages import Gossip, GossipOnly, MemberUpdate, Message, ResourceRecord, Status
from scenarios.sim import Simulator
from scenarios.sim.cluster import build_swim_cluster, converged, node_id

TOP = 2**63 - 1
FAR = (MAX_GENERATION << GEN_SHIFT) | ((1 << GEN_SHIFT) - 1)  # the largest generation's last
CFG = SwimConfig(max_clock_skew=60.0)


def _forge(sim: Simulator, at: str, *members: MemberUpdate, resources=()) -> None:
    """A message from no member, straight into `at`'s core, as if it came over the wire."""
    msg = Message("mallory", "sim://mallory", 0, GossipOnly(Gossip(members, tuple(resources))))
    sim.call(at, lambda c, now: c.on_message(now, msg))


def _cluster(n: int = 12, seed: int = 5) -> tuple[Simulator, list[str]]:
    sim = Simulator(seed, encode_messages=True)  # as on the wire: integers stop at 2^63 - 1
    addrs = build_swim_cluster(sim, n, seed, CFG)
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=60, check_every=0.5)
    return sim, addrs


def _statuses(sim: Simulator, addrs: list[str], victim: str) -> set[Status]:
    nid = node_id(victim)
    return {sim.core(a).status_of(nid) for a in addrs if a != victim and sim.is_up(a)}


def _restart(sim: Simulator, addr: str, seeds: list[str], generation: int) -> None:
    sim.crash(addr)
    core = Membership(node_id(addr), addr, random.Random(f"again:{addr}"), CFG,
                      generation=generation)  # fmt: skip
    sim.add_node(addr, core)
    sim.call(addr, lambda c, now: c.join(now, seeds))


def test_a_forged_left_at_the_top_of_the_integers_does_not_evict_its_victim():
    sim, addrs = _cluster()
    victim = addrs[3]
    for a in addrs[:6]:
        if a != victim:
            _forge(sim, a, MemberUpdate(node_id(victim), victim, TOP, Status.LEFT))
    sim.run_for(15.0)
    assert _statuses(sim, addrs, victim) == {Status.ALIVE}
    assert sim.core(addrs[0]).stats["implausible_incarnation"] >= 1
    # ...and a restart of it is noticed and taken in as usual
    _restart(sim, victim, [addrs[0]], generation=1)
    sim.run_for(15.0)
    assert _statuses(sim, addrs, victim) == {Status.ALIVE}
    assert all(sim.core(a).member(node_id(victim)).incarnation >> GEN_SHIFT == 1 for a in addrs)


def test_a_forged_left_at_a_future_generation_is_refused_and_does_not_push_the_victim():
    sim, addrs = _cluster()
    victim = addrs[5]
    soon = int((sim.now + 10 * 60) * 1000)  # ten minutes ahead of every clock: beyond the skew
    for inc in (FAR, soon << GEN_SHIFT):
        _forge(sim, addrs[0], MemberUpdate(node_id(victim), victim, inc, Status.LEFT))
        _forge(sim, victim, MemberUpdate(node_id(victim), victim, inc, Status.SUSPECT, "x"))
    sim.run_for(15.0)
    assert _statuses(sim, addrs, victim) == {Status.ALIVE}
    assert sim.core(victim).incarnation < 1 << GEN_SHIFT  # never refuted: nothing to refute
    assert sim.core(addrs[0]).stats["implausible_incarnation"] == 2
    assert sim.core(victim).stats["implausible_incarnation"] == 2


def test_a_forged_left_within_the_skew_is_refuted_and_the_victim_comes_back():
    sim, addrs = _cluster()
    victim = addrs[2]
    # as far ahead as a clock may be, at the last counter value of that generation: the
    # refutation crosses into the next generation, which every peer must still accept
    ahead = int((sim.now + 50) * 1000)
    inc = (ahead << GEN_SHIFT) | ((1 << GEN_SHIFT) - 1)
    _forge(sim, addrs[0], MemberUpdate(node_id(victim), victim, inc, Status.LEFT))
    sim.run_for(20.0)
    assert _statuses(sim, addrs, victim) == {Status.ALIVE}
    assert sim.core(victim).incarnation > inc


def test_a_forged_resource_record_version_cannot_pin_a_nodes_record():
    sim, addrs = _cluster()
    victim = addrs[4]
    nid = node_id(victim)
    ahead = int((sim.now + 30) * 1000) << GEN_SHIFT  # plausible: the victim must outrank it
    for v in (TOP, ahead):
        _forge(sim, addrs[0], resources=[ResourceRecord(nid, v, cpus=1e6)])
    sim.run_for(5.0)
    sim.call(victim, lambda c, now: c.update_resources(now, cpus=3.0))
    sim.run_for(15.0)
    seen = {sim.core(a).record_of(nid).cpus for a in addrs if a != victim}
    assert seen == {3.0}
    assert sim.core(addrs[0]).stats["implausible_version"] == 1
    assert sim.core(victim).resources.version > ahead
