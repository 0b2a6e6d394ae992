"""Build simulated SWIM clusters: `gossip.membership.Membership` cores hosted by the Simulator.

Node i has id ``n{i}`` and address ``sim://n{i}``; its RNG is ``random.Random(f"{seed}:{addr}")``.
Node 0 starts at once; node i starts (is added and calls ``join`` through node 0) at
``start + i * stagger``, like processes launched one after another.

``streams`` (default off) turns on the simulator's stream model, as real agents send everything
but failure detection over TCP (`scenarios.sim.network.NetworkModel.set_streams`); False leaves
the simulator's network as it is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from gossip.config import SwimConfig
from gossip.membership import Membership
from gossip.messages import MemberUpdate, Message, ResourceRecord, Status, SyncReply
from scenarios.sim.network import StreamConfig
from scenarios.sim.simulator import Simulator


def node_id(addr: str) -> str:
    return addr.removeprefix("sim://")


def build_swim_cluster(
    sim: Simulator,
    n: int,
    seed: int,
    config: SwimConfig | None = None,
    stagger: float = 0.01,
    resources: ResourceRecord | None = None,
    *,
    streams: bool | StreamConfig = False,
) -> list[str]:
    """Schedule n Membership nodes joining through sim://n0; returns their addresses.

    Nodes appear as the virtual clock passes their start time (run the simulator to see them).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if streams:
        sim.network.set_streams(streams)
    addrs = [f"sim://n{i}" for i in range(n)]
    seed_addr = addrs[0]
    start = sim.now

    def starter(addr: str):
        def start_node(s: Simulator) -> None:
            rng = random.Random(f"{seed}:{addr}")
            # Membership re-stamps the record with its own node id
            core = Membership(node_id(addr), addr, rng, config, resources)
            s.add_node(addr, core)
            s.call(addr, lambda c, now: c.join(now, [seed_addr]))

        return start_node

    for i, addr in enumerate(addrs):
        fn = starter(addr)
        if i == 0:
            fn(sim)
        else:
            sim.schedule(start + i * stagger, fn)
    return addrs


def view_of(sim: Simulator, addr: str) -> dict[str, Status]:
    """addr's belief about every member: node id -> status."""
    return {m.node: m.status for m in sim.core(addr).members()}


def converged(sim: Simulator, addrs: Iterable[str]) -> bool:
    """True when every running node of `addrs` sees exactly the running ones as ALIVE."""
    addrs = list(addrs)
    if any(a not in sim.addrs for a in addrs):
        return False  # some have not started yet
    up = {node_id(a) for a in addrs if sim.is_up(a)}
    for a in addrs:
        if sim.is_up(a):
            alive = {nid for nid, st in view_of(sim, a).items() if st == Status.ALIVE}
            if alive != up:
                return False
    return True


def bootstrap_swim_cluster(
    sim: Simulator,
    n: int,
    seed: int,
    config: SwimConfig | None = None,
    *,
    streams: bool | StreamConfig = False,
) -> list[str]:
    """n Membership nodes that already know each other, as after a completed join.

    Joining thousands of nodes through one seed costs O(n^2) messages and minutes of wall time;
    benchmarks of steady-state behaviour (dissemination, failure detection) start from here.
    Each core learns the full member list through an ordinary anti-entropy `SyncReply`.
    """
    if streams:
        sim.network.set_streams(streams)
    addrs = [f"sim://n{i}" for i in range(n)]
    cores = [Membership(node_id(a), a, random.Random(f"{seed}:{a}"), config) for a in addrs]
    members = tuple(MemberUpdate(c.node_id, c.addr, 0, Status.ALIVE) for c in cores)
    records = tuple(c.resources for c in cores)
    state = Message("bootstrap", "sim://bootstrap", 0, SyncReply(members, records))
    for a, c in zip(addrs, cores, strict=True):
        c.join(sim.now, [])
        c.on_message(sim.now, state)  # what it learnt is not part of the run
        sim.add_node(a, c)
    return addrs
