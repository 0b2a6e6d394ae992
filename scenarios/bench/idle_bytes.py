"""Where an idle cluster's bytes go, by message kind, on the deterministic simulator.

    python -m scenarios.bench.idle_bytes [--nodes 50] [--warmup 60] [--window 120]
                                         [--republish 0,60,20,5] [--seed 0]

Why: the real idle benchmark (`scenarios.bench.idle_membership`) says how many bytes an agent
sends, not which messages they are; its figure also moves with the machine (an agent republishes
its resource record when the machine's load moves 5 %, and 50 agents on 2 shared cores move it
often). Here every byte is attributed, and the republishing rate is a parameter.

How: N membership cores that look like agents on one machine (ids ``node<i>``, addresses
``tcp://127.0.0.1:<port>``, generations and incarnations as an agent starting now has them,
records with an agent's capacity and four forecast horizons), joined one after another through
node0 with the default `SwimConfig`, on the simulator's agent shell (probes as datagrams, the
rest on streams; 1 ms ± 0.5 ms links, no loss). After the warm-up each node republishes its record
(a new load and forecast) at exponentially distributed intervals of mean `--republish` seconds
(0: never), and the window's messages are encoded with `gossip.wire` and counted by kind
(`scenarios.sim.meter`): per node per second, and how many of those bytes are member updates and
resource records carried inside. Deterministic: the same arguments print the same table.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

from gossip.membership import Membership
from gossip.messages import ResourceRecord, Status
from scenarios.sim import Simulator
from scenarios.sim.meter import KindBytes, WireMeter

GENERATION = 220_000_000_000  # an agent's generation (ms since 2020) in late 2026
PORT = 40_000


def _record(node: str) -> ResourceRecord:
    """What an idle agent on a 2-core, 24 GiB machine publishes (docs/agent.md)."""
    return ResourceRecord(node=node, version=0, cpus=2.0, memory=25_275_990_016,
                          load=0.25, forecast=(0.3, 0.3, 0.3, 0.3))  # fmt: skip


def _agents(sim: Simulator, n: int, seed: int, stagger: float = 0.05) -> list[WireMeter]:
    """n metered cores joining through the first, `stagger` seconds apart."""
    meters: list[WireMeter] = []
    seed_addr = f"tcp://127.0.0.1:{PORT}"
    for i in range(n):
        node, addr = f"node{i}", f"tcp://127.0.0.1:{PORT + i}"
        core = Membership(node, addr, random.Random(f"{seed}:{addr}"), None, _record(node),
                          generation=GENERATION + i)  # fmt: skip
        meters.append(WireMeter(core))

        def start(s: Simulator, addr: str = addr, meter: WireMeter = meters[-1]) -> None:
            s.add_node(addr, meter)
            s.call(addr, lambda c, now: c.join(now, [seed_addr]))

        sim.schedule(sim.now + i * stagger, start)
    return meters


def _republish(sim: Simulator, addrs: Sequence[str], mean: float, seed: int) -> None:
    """Each node publishes a new load and forecast every Exp(mean) seconds."""
    rng = random.Random(f"republish:{seed}")

    def publish(s: Simulator, addr: str) -> None:
        load = round(rng.random(), 3)
        s.call(addr, lambda c, now: c.update_resources(now, load=load, forecast=(load,) * 4))
        s.schedule(s.now + rng.expovariate(1 / mean), lambda s2: publish(s2, addr))

    for a in addrs:
        sim.schedule(sim.now + rng.expovariate(1 / mean), lambda s, a=a: publish(s, a))


def breakdown(nodes: int, warmup: float, window: float, republish: float,
              seed: int = 0) -> dict[str, KindBytes]:  # fmt: skip
    """Bytes sent over the window by kind, summed over all nodes."""
    sim = Simulator(seed)
    sim.network.set_streams(True)
    meters = _agents(sim, nodes, seed)
    sim.run_for(nodes * 0.05)
    addrs = sim.addrs
    everyone = {m.core.node_id for m in meters}

    def converged() -> bool:
        return all(m.core.count(Status.ALIVE) == nodes for m in meters) and all(
            {v.node for v in m.core.members()} == everyone for m in meters)

    if sim.run_until_true(converged, timeout=120, check_every=0.5) is None:
        raise RuntimeError(f"{nodes} nodes did not converge")
    if republish > 0:
        _republish(sim, addrs, republish, seed)
    sim.run_for(warmup)
    for m in meters:
        m.reset()
    sim.run_for(window)
    total: dict[str, KindBytes] = {}
    for m in meters:
        for kind, kb in m.sent.items():
            total.setdefault(kind, KindBytes()).add(kb)
    return dict(sorted(total.items(), key=lambda kv: -kv[1].bytes))


def table(total: dict[str, KindBytes], nodes: int, window: float) -> list[str]:
    """Markdown rows: per node per second, by kind, then all kinds."""
    per = nodes * window
    rows = ["| kind | messages/s | bytes/s | of which member updates | of which records |",
            "|:---|---:|---:|---:|---:|"]  # fmt: skip
    everything = KindBytes()
    for kind, kb in [*total.items(), ("all", everything)]:
        if kind != "all":
            everything.add(kb)
        rows.append(f"| {kind} | {kb.messages / per:.2f} | {kb.bytes / per:,.0f} | "
                    f"{kb.members / per:,.0f} | {kb.records / per:,.0f} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=50, help="cluster size")
    p.add_argument("--warmup", type=float, default=60.0, help="virtual seconds before measuring")
    p.add_argument("--window", type=float, default=120.0, help="virtual seconds measured")
    p.add_argument("--republish", default="0,60,20,5",
                   help="mean seconds between a node's record republishes, comma-separated "
                        "(0 = never); one table each")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    a = p.parse_args(argv)
    for r in (float(x) for x in a.republish.split(",")):
        print(f"[idle_bytes] {a.nodes} nodes, republish {r:g} s", file=sys.stderr, flush=True)
        total = breakdown(a.nodes, a.warmup, a.window, r, a.seed)
        every = f"every {r:g} s on average" if r > 0 else "never"
        print(f"\n{a.nodes} nodes, records republished {every}; per node per second:\n")  # CLI
        print("\n".join(table(total, a.nodes, a.window)))  # CLI output


if __name__ == "__main__":
    main()
