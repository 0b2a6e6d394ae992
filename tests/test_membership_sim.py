"""SWIM membership on the deterministic simulator: hundreds of nodes, failures, loss, partitions."""

from __future__ import annotations

import pytest

from gossip.messages import Status
from scenarios.sim import Simulator
from scenarios.sim.cluster import build_swim_cluster, converged, node_id, view_of

N = 500


def _cluster(n: int, seed: int, loss: float = 0.0) -> tuple[Simulator, list[str]]:
    sim = Simulator(seed)
    addrs = build_swim_cluster(sim, n, seed)
    t = sim.run_until_true(lambda: converged(sim, addrs), timeout=90, check_every=1.0)
    assert t is not None, "cluster did not converge after joins"
    if loss:
        sim.set_loss(loss)
    return sim, addrs


def _statuses_of(sim: Simulator, addrs: list[str], subject: str) -> dict[Status, int]:
    out: dict[Status, int] = {}
    nid = node_id(subject)
    for a in addrs:
        if sim.is_up(a) and a != subject:
            st = sim.core(a).member(nid).status
            out[st] = out.get(st, 0) + 1
    return out


def _ever_declared_dead(sim: Simulator, addrs: list[str]) -> set[str]:
    """Nodes that any live observer marked DEAD at some point (drains the event logs)."""
    dead = set()
    for a in addrs:
        if sim.is_up(a):
            for _t, node, status, _inc in sim.take_events(a):
                if status == Status.DEAD:
                    dead.add(node)
    return dead


@pytest.mark.slow
def test_joins_converge_and_crash_is_detected_by_every_survivor():
    sim, addrs = _cluster(N, seed=1)
    assert all(len(view_of(sim, a)) == N for a in addrs)
    assert _ever_declared_dead(sim, addrs) == set()

    victim = addrs[123]
    crashed_at = sim.now
    sim.crash(victim)
    t = sim.run_until_true(
        lambda: _statuses_of(sim, addrs, victim) == {Status.DEAD: N - 1},
        timeout=60,
        check_every=0.5,
    )
    assert t is not None, _statuses_of(sim, addrs, victim)
    assert t - crashed_at < 30
    # nobody else was hurt
    for a in addrs:
        if a != victim:
            assert _statuses_of(sim, addrs, a) == {Status.ALIVE: N - 2}


@pytest.mark.slow
def test_short_pause_is_refuted_not_declared_failed():
    sim, addrs = _cluster(N, seed=2)
    _ever_declared_dead(sim, addrs)  # drain join events
    victim = addrs[77]
    lo, _hi = sim.core(addrs[0]).config.suspicion_bounds(N)
    sim.pause(victim)
    sim.run_for(lo * 0.5)
    sim.resume(victim)
    sim.run_for(20)
    assert _ever_declared_dead(sim, addrs) == set()
    assert _statuses_of(sim, addrs, victim) == {Status.ALIVE: N - 1}
    assert sim.core(victim).incarnation >= 1, "the paused node should have refuted a suspicion"


@pytest.mark.slow
def test_ten_percent_loss_declares_no_live_node_failed():
    sim, addrs = _cluster(N, seed=3, loss=0.10)
    _ever_declared_dead(sim, addrs)
    sim.run_for(60)
    assert _ever_declared_dead(sim, addrs) == set()
    suspicions = sum(sim.core(a).stats["suspect_raised"] for a in addrs)
    assert suspicions > 0, "10% loss should have caused (refuted) suspicions"


@pytest.mark.slow
def test_partition_heals_and_both_sides_remerge():
    sim, addrs = _cluster(N, seed=4)
    left, right = addrs[: N // 2], addrs[N // 2 :]
    sim.partition(left, right)
    sim.run_until_true(
        lambda: (
            _statuses_of(sim, left, right[0]).get(Status.DEAD, 0) == len(left)
            and _statuses_of(sim, right, left[0]).get(Status.DEAD, 0) == len(right)
        ),
        timeout=60,
        check_every=1.0,
    )
    assert _statuses_of(sim, left, right[0]) == {Status.DEAD: len(left)}
    sim.heal()
    t = sim.run_until_true(lambda: converged(sim, addrs), timeout=120, check_every=1.0)
    assert t is not None, "partition did not re-merge"


@pytest.mark.slow
def test_left_node_is_left_not_failed():
    sim, addrs = _cluster(N, seed=5)
    _ever_declared_dead(sim, addrs)
    leaver = addrs[42]
    sim.call(leaver, lambda core, now: core.leave(now))
    sim.run_for(sim.core(leaver).config.leave_linger)
    sim.crash(leaver)  # the process exits after lingering
    sim.run_for(30)
    assert _statuses_of(sim, addrs, leaver) == {Status.LEFT: N - 1}
    assert node_id(leaver) not in _ever_declared_dead(sim, addrs)


def _run_with_failures(seed: int) -> tuple[str, list]:
    sim = Simulator(seed, trace_messages=True)
    addrs = build_swim_cluster(sim, 60, seed)
    sim.run_until(8)
    sim.set_loss(0.05)
    sim.crash(addrs[5])
    sim.pause(addrs[9])
    sim.run_until(12)
    sim.resume(addrs[9])
    sim.partition(addrs[:20], addrs[20:])
    sim.run_until(20)
    sim.heal()
    sim.run_until(30)
    events = [sim.take_events(a) for a in addrs if sim.is_up(a)]
    return sim.fingerprint(), events


def test_same_seed_same_trace_different_seed_different():
    fp1, ev1 = _run_with_failures(11)
    fp2, ev2 = _run_with_failures(11)
    fp3, ev3 = _run_with_failures(12)
    assert fp1 == fp2 and ev1 == ev2
    assert fp1 != fp3 and ev1 != ev3


def test_small_cluster_over_real_wire_encoding_with_jitter_and_loss():
    # every message goes through gossip.wire; large jitter reorders messages on each link
    from scenarios.sim import NetworkModel

    sim = Simulator(21, NetworkModel(latency=0.002, jitter=0.03, loss=0.05), encode_messages=True)
    addrs = build_swim_cluster(sim, 40, 21)
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=60) is not None
    sim.crash(addrs[3])
    assert (
        sim.run_until_true(
            lambda: _statuses_of(sim, addrs, addrs[3]) == {Status.DEAD: 39}, timeout=60
        )
        is not None
    )
    assert sim.metrics().dropped["wire"] == 0


def test_simultaneous_joins_converge_quickly():
    # everyone joins through n0 at the same instant: the seed's answers miss the concurrent
    # joiners, and the catch-up push-pull after joining must fill the gaps within seconds
    sim = Simulator(31)
    addrs = build_swim_cluster(sim, 100, 31, stagger=0.0)
    t = sim.run_until_true(lambda: converged(sim, addrs), timeout=30, check_every=0.25)
    assert t is not None and t < 4.0, t
