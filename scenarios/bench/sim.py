"""Membership at scale on the simulator: dissemination rounds, per-node load, crash detection.

    python -m scenarios.bench.sim [--sizes 100,1000,5000]

Every figure is virtual time of the deterministic simulator (1 ms ± 0.5 ms links, no loss),
so it measures the protocol, not this machine.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

from gossip.config import SwimConfig
from gossip.messages import Status
from scenarios.sim import Simulator
from scenarios.sim.cluster import bootstrap_swim_cluster, node_id

log = logging.getLogger(__name__)

POLL = 0.02  # virtual seconds between checks: the resolution of every time below


def _progress(msg: str) -> None:
    print(f"[bench-sim] {msg}", file=sys.stderr, flush=True)


def _spread(sim: Simulator, addrs: list[str], reached, timeout: float) -> tuple[float, float]:
    """Virtual seconds until `reached(addr)` holds for 99 % and 100 % of addrs."""
    t0 = sim.now
    pending = set(addrs)
    need99 = math.ceil(0.99 * len(addrs))
    t99 = math.nan
    while pending and sim.now - t0 < timeout:
        sim.run_for(POLL)
        pending = {a for a in pending if not reached(a)}
        if math.isnan(t99) and len(addrs) - len(pending) >= need99:
            t99 = sim.now - t0
    return t99, (sim.now - t0 if not pending else math.nan)


def _publish_load_every_second(sim: Simulator, addrs: list[str]) -> None:
    """Like real agents: every node publishes a new load figure once per second."""
    slices = 10
    batches = [addrs[i::slices] for i in range(slices)]

    def step(s: Simulator, k: int = 0) -> None:
        load = (k % 100) / 100
        for a in batches[k % slices]:
            s.call(a, lambda c, now: c.update_resources(now, load=load))
        s.schedule(s.now + 1.0 / slices, lambda s2: step(s2, k + 1))

    sim.schedule(sim.now, step)


def measure(
    n: int, seed: int = 1, config: SwimConfig | None = None, churn: bool = False
) -> dict[str, float]:
    cfg = config or SwimConfig()
    sim = Simulator(seed)
    wall = time.perf_counter()
    addrs = bootstrap_swim_cluster(sim, n, seed, cfg)
    if churn:
        _publish_load_every_second(sim, addrs)
    sim.run_for(3.0)  # let the start-up gossip of every node's own record die down

    # steady-state message load
    sent0, t0 = sim.metrics().sent, sim.now
    sim.run_for(5.0)
    msgs = (sim.metrics().sent - sent0) / n / (sim.now - t0)

    # one resource update, from one node to everybody
    source = addrs[1]
    sim.call(source, lambda c, now: c.update_resources(now, load=0.42))
    version = sim.core(source).resources.version
    src_id = node_id(source)
    others = [a for a in addrs if a != source]

    def has_update(a: str) -> bool:
        r = sim.core(a).member(src_id).resources
        return r is not None and r.version >= version

    d99, d100 = _spread(sim, others, has_update, timeout=60)

    # crash of one node, until every survivor marks it failed
    victim = addrs[2]
    vic_id = node_id(victim)
    sim.crash(victim)
    survivors = [a for a in addrs if a != victim]
    first = math.nan
    t_crash = sim.now

    def sees_dead(a: str) -> bool:
        nonlocal first
        dead = sim.core(a).member(vic_id).status == Status.DEAD
        if dead and math.isnan(first):
            first = sim.now - t_crash
        return dead

    c99, c100 = _spread(sim, survivors, sees_dead, timeout=120)
    return {
        "n": n,
        "msgs_per_node_s": msgs,
        "dissem_99_s": d99,
        "dissem_100_s": d100,
        "rounds_99": d99 / cfg.gossip_interval,
        "rounds_100": d100 / cfg.gossip_interval,
        "crash_first_s": first,
        "crash_99_s": c99,
        "crash_all_s": c100,
        "wall_s": time.perf_counter() - wall,
    }


def run(
    sizes: tuple[int, ...] = (100, 1000, 5000), churn_sizes: tuple[int, ...] = (100, 1000)
) -> str:
    cfg = SwimConfig()
    rows = []
    for n, churn in [(n, False) for n in sizes] + [(n, True) for n in churn_sizes]:
        _progress(f"N={n}{' with load updates' if churn else ''} ...")
        r = measure(n, config=cfg, churn=churn)
        r["churn"] = churn
        _progress(f"N={n} done in {r['wall_s']:.0f} s wall")
        rows.append(r)
    lines = [
        "### Membership on the simulator (virtual time)",
        "",
        f"Command: `python -m scenarios.bench.sim --sizes {','.join(map(str, sizes))} "
        f"--churn-sizes {','.join(map(str, churn_sizes))}`. "
        "Default `SwimConfig` (probe every "
        f"{cfg.probe_interval} s, probe timeout {cfg.probe_timeout} s, gossip every "
        f"{cfg.gossip_interval} s to {cfg.gossip_fanout} peers, {cfg.gossip_max_items} updates "
        f"per message, retransmit mult {cfg.retransmit_mult}, suspicion mult "
        f"{cfg.suspicion_mult}), links 1 ms ± 0.5 ms, no loss. The cluster starts converged; a "
        f"round is one gossip interval; times are measured every {POLL} s of virtual time. "
        "*idle*: nothing changes but the measured update; *load updates*: every node also "
        "publishes a new resource record each second, as real agents do.",
        "",
        "| N | background | log2 N | target 2·log2 N rounds | rounds to 99 % | rounds to 100 % "
        "| time to 99 % / 100 % (s) | msgs sent per node per s "
        "| crash: first / 99 % / all survivors see it (s) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lg = math.log2(r["n"])
        lines.append(
            f"| {r['n']} | {'load updates' if r['churn'] else 'idle'} | {lg:.1f} | "
            f"{2 * lg:.1f} | {r['rounds_99']:.1f} | "
            f"{r['rounds_100']:.1f} | {r['dissem_99_s']:.2f} / {r['dissem_100_s']:.2f} | "
            f"{r['msgs_per_node_s']:.1f} | {r['crash_first_s']:.2f} / {r['crash_99_s']:.2f} / "
            f"{r['crash_all_s']:.2f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.sim", description=__doc__)
    p.add_argument("--sizes", default="100,1000,5000", help="comma-separated cluster sizes")
    p.add_argument(
        "--churn-sizes",
        default="100,1000",
        help="sizes also run with every node publishing its load each second",
    )
    args = p.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",") if s)
        churn = tuple(int(s) for s in args.churn_sizes.split(",") if s)
        if any(s < 3 for s in sizes + churn):
            raise ValueError
    except ValueError:
        print("bench_sim: error: --sizes takes integers >= 3, e.g. 100,1000", file=sys.stderr)
        return 2
    print(run(sizes, churn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
