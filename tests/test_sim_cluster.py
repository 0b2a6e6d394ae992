"""SWIM membership cores on the simulator: join, crash detection, pause, determinism, wire."""

from __future__ import annotations

from gossip.messages import ResourceRecord, Status
from scenarios.sim import NetworkModel, Simulator
from scenarios.sim.cluster import build_swim_cluster, converged, view_of

N = 20


def _cluster(seed: int, **kw) -> tuple[Simulator, list[str]]:
    sim = Simulator(seed, **kw)
    addrs = build_swim_cluster(sim, N, seed, resources=ResourceRecord("x", 0, cpus=8.0))
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=30) is not None
    return sim, addrs


def _all_see(sim: Simulator, addrs: list[str], nid: str, status: Status) -> bool:
    return all(view_of(sim, a).get(nid) == status for a in addrs if sim.is_up(a))


def test_cluster_joins_and_detects_a_crash():
    sim, addrs = _cluster(1)
    assert sim.core(addrs[7]).member("n3").resources.cpus == 8.0
    sim.crash(addrs[3])
    t0 = sim.now
    t = sim.run_until_true(lambda: _all_see(sim, addrs, "n3", Status.DEAD), timeout=30)
    assert t is not None and t - t0 < 15
    assert converged(sim, addrs)


def test_paused_node_refutes_and_is_alive_again_after_resume():
    sim, addrs = _cluster(2)
    sim.pause(addrs[4])
    assert sim.run_until_true(lambda: _all_see(sim, addrs, "n4", Status.DEAD), timeout=30)
    sim.resume(addrs[4])
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=30) is not None
    assert sim.core(addrs[4]).incarnation > 0


def test_cluster_runs_are_reproducible():
    def run(seed):
        sim, addrs = _cluster(seed, network=NetworkModel(loss=0.02))
        sim.crash(addrs[1])
        sim.run_for(5.0)
        return sim.fingerprint()

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_cluster_over_the_real_wire_encoding():
    sim, addrs = _cluster(3, encode_messages=True)
    m = sim.metrics()
    assert m.dropped["wire"] == 0 and m.bytes_delivered > 0
