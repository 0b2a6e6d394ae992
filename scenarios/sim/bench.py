"""Simulator throughput: a flooding toy core on N nodes, wall-clock events/s.

    python -m scenarios.sim.bench --nodes 5000 --seconds 10

Each node pings one random peer every `--period` seconds and acks every ping, so with the
default 0.1 s a node handles ~20 messages per virtual second (10 pings + 10 acks received).
"""

from __future__ import annotations

import argparse
import time

from scenarios.sim.network import NetworkModel
from scenarios.sim.simulator import Simulator
from scenarios.sim.toys import flood_cluster


def run(nodes: int, seconds: float, seed: int = 0, period: float = 0.1,
        loss: float = 0.0, encode: bool = False) -> dict[str, float]:  # fmt: skip
    sim = Simulator(seed, NetworkModel(loss=loss), encode_messages=encode)
    flood_cluster(sim, nodes, seed, period=period)
    t0 = time.perf_counter()
    step = max(seconds / 10, 0.1)
    while sim.now < seconds:
        sim.run_until(min(sim.now + step, seconds))
    wall = time.perf_counter() - t0
    m = sim.metrics()
    return {
        "nodes": nodes,
        "virtual_s": seconds,
        "wall_s": wall,
        "events": m.events,
        "events_per_s": m.events / wall,
        "delivered": m.delivered,
        "msgs_per_node_per_vs": m.delivered / nodes / seconds,
        "ticks": m.ticks,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5000, help="number of simulated nodes")
    p.add_argument("--seconds", type=float, default=10.0, help="virtual seconds to simulate")
    p.add_argument("--period", type=float, default=0.1, help="ping period per node (virtual s)")
    p.add_argument("--loss", type=float, default=0.0, help="global loss probability")
    p.add_argument("--encode", action="store_true", help="round-trip every message via the wire")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    a = p.parse_args(argv)
    r = run(a.nodes, a.seconds, a.seed, a.period, a.loss, a.encode)
    print(  # CLI output
        f"{r['nodes']} nodes, {r['virtual_s']:g} virtual s in {r['wall_s']:.2f} s wall: "
        f"{r['events']:,} events ({r['events_per_s']:,.0f}/s), {r['delivered']:,} messages "
        f"({r['msgs_per_node_per_vs']:.1f} per node per virtual s), {r['ticks']:,} ticks"
    )


if __name__ == "__main__":
    main()
