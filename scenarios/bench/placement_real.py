"""Benchmark of task placement between real agent processes on loopback.

A `LocalCluster` of N agents (default 20; one process each, default SWIM and placement
configuration, the meta-learned forecaster loaded) runs short real tasks (``true``, 0.05 CPU
each, so capacity never limits placement). Measured:

1. latency, tasks submitted one after another to random agents: the client's submit round trip
   (returns once the record is on all 3 replicas) and submit→placed (the record's ``placed``
   minus ``submitted`` timestamps: the owner's award acknowledged by the winner; all processes
   share this machine's wall clock);
2. throughput: a burst of tasks with many submits in flight at once (one asyncio client, one
   connection per agent); placements per second = tasks / (last ``placed`` − first
   ``submitted``), and submits per second as the client saw them;
3. messages per placement: placement messages (every kind of `agent.messages` but the lookups,
   which are this benchmark's own status reads) sent by all agents from the burst's start
   until its last task is terminal, divided by the tasks; and the same by kind.

Everything is measured twice in the same run: on a plain cluster and on a keyed one (every
message CURVE-encrypted and authenticated, the client with an admin credential): CURVE's cost.

    python -m scenarios.bench.placement_real [--agents 20] [--latency 300] [--burst 2000]
                                             [--bid-rounds]

`--bid-rounds` turns direct awards off, so every task goes through a bid round: the path a
busy cluster takes, where every owner ranking the same lagging gossip can herd.

`run()` returns the markdown section embedded in docs/benchmarks.md by scenarios/bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import random
import statistics
import sys
import time
from typing import Any

import zmq
import zmq.asyncio

from agent.messages import PLACEMENT
from deploy.client import query
from deploy.local_cluster import LocalCluster
from gossip.auth import Credential
from gossip.kinds import kinds
from gossip.messages import Message, Query, QueryReply
from gossip.wire import decode, encode

TASK = {"argv": ["true"], "cpus": 0.05, "expected": 1.0}
IN_FLIGHT = 64  # concurrent submits during the burst


def _stderr(msg: str) -> None:
    print(f"[bench_placement_real] {msg}", file=sys.stderr, flush=True)


class _Client:
    """Many queries in flight over one DEALER per agent; replies matched by sequence number."""

    def __init__(self, addrs: list[str], credential: Credential | None = None) -> None:
        self.ctx = zmq.asyncio.Context()
        self.socks = {}
        self.sender = credential.sender if credential else "bench"
        for a in addrs:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if credential is not None:
                s.curve_serverkey = credential.server_public
                s.curve_publickey = credential.keypair.public
                s.curve_secretkey = credential.keypair.secret
            s.connect(a)
            self.socks[a] = s
        self.seq = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.readers = [asyncio.ensure_future(self._read(s)) for s in self.socks.values()]

    async def _read(self, sock: Any) -> None:
        while True:
            msg = decode(await sock.recv())
            fut = self.waiting.pop(msg.seq, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.body)

    async def ask(self, addr: str, what: str, args: dict, timeout: float = 10.0) -> Any:
        seq = next(self.seq)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        await self.socks[addr].send(encode(Message(self.sender, "", seq, Query(what, args))))
        rep: QueryReply = await asyncio.wait_for(fut, timeout)
        if not rep.ok:
            raise RuntimeError(f"{what} refused by {addr}: {rep.error}")
        return rep.data

    def close(self) -> None:
        for r in self.readers:
            r.cancel()
        for s in self.socks.values():
            s.close(0)
        self.ctx.term()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _records(client: _Client, addrs: list[str], ids: list[str]) -> dict[str, dict]:
    """Final records of `ids` (polled until every one is terminal or 60 s passed)."""
    out: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    rng = random.Random(1)
    unfinished = list(ids)
    sem = asyncio.Semaphore(IN_FLIGHT)
    while unfinished and time.monotonic() < deadline:

        async def one(tid: str) -> None:
            async with sem:
                try:
                    row = await client.ask(rng.choice(addrs), "status", {"id": tid})
                except (RuntimeError, TimeoutError):
                    return
                if row["state"] in ("succeeded", "failed", "cancelled", "rejected"):
                    out[tid] = row

        await asyncio.gather(*(one(t) for t in unfinished))
        unfinished = [t for t in unfinished if t not in out]
        if unfinished:
            await asyncio.sleep(0.5)
    return out


async def submit_all(client: _Client, addrs: list[str], ids: list[str],
                     rng: random.Random) -> int:  # fmt: skip
    """Submit every id to random agents, IN_FLIGHT at a time; how many were not confirmed in
    time (their records may still exist)."""
    sem = asyncio.Semaphore(IN_FLIGHT)
    errors = 0

    async def one(task_id: str) -> None:
        nonlocal errors
        async with sem:
            try:
                await client.ask(rng.choice(addrs), "submit", {"id": task_id, "spec": TASK})
            except (RuntimeError, TimeoutError):
                errors += 1

    await asyncio.gather(*(one(t) for t in ids))
    return errors


# what an agent sends to place and run a task; the lookups (TaskGet, TaskList and their replies)
# are left out: they answer this benchmark's own status reads
PLACEMENT_KINDS = frozenset(
    k.body.__name__ for k in kinds() if k.handler == PLACEMENT
) - {"TaskGet", "TaskGetReply", "TaskList", "TaskListReply"}  # fmt: skip


def _sent(addrs: list[str], credential: Credential | None) -> collections.Counter[str]:
    """Placement messages sent so far by all agents, by kind."""
    out: collections.Counter[str] = collections.Counter()
    for a in addrs:
        by_kind = query(a, "stats", 5.0, credential=credential)["sent_by_kind"]
        out.update({k: v for k, v in by_kind.items() if k in PLACEMENT_KINDS})
    return out


def _to_started(recs) -> list[float]:  # noqa: ANN001
    """Submit→started per record (ms): the entry's receipt of the submit to the runner's start
    of the run, both by this machine's clock. An owner that places a task as soon as it has it
    writes `placed` before its replicas confirm the record, and awards (so the run starts) only
    after; this is the figure that says when the task ran."""
    return [(r["started"] - r["submitted"]) * 1000 for r in recs if r.get("started")]


async def _measure(
    addrs: list[str], n_latency: int, n_burst: int, credential: Credential | None = None,
) -> dict[str, Any]:  # fmt: skip
    client = _Client(addrs, credential)
    rng = random.Random(0)
    res: dict[str, Any] = {}
    try:
        # 1. latency, one at a time
        rtts, ids = [], []
        for i in range(n_latency):
            tid = f"lat-{i}"
            t = time.perf_counter()
            await client.ask(rng.choice(addrs), "submit", {"id": tid, "spec": TASK})
            rtts.append((time.perf_counter() - t) * 1000)
            ids.append(tid)
        recs = await _records(client, addrs, ids)
        placed = [(r["placed"] - r["submitted"]) * 1000 for r in recs.values() if r["placed"]]
        res.update(lat_n=len(ids), lat_done=len(recs), rtt=rtts, to_placed=placed,
                   to_started=_to_started(recs.values()),
                   lat_ok=sum(r["state"] == "succeeded" for r in recs.values()))  # fmt: skip
        _stderr(f"latency: {len(recs)}/{len(ids)} done")

        # 2. throughput: a burst with IN_FLIGHT submits outstanding
        await asyncio.sleep(2.0)
        bids = [f"burst-{i}" for i in range(n_burst)]

        s0 = _sent(addrs, credential)
        t0 = time.perf_counter()
        errors = await submit_all(client, addrs, bids, rng)
        submit_s = time.perf_counter() - t0
        recs = await _records(client, addrs, bids)
        sent = _sent(addrs, credential)
        sent.subtract(s0)
        rs = [r for r in recs.values() if r["placed"]]
        span = max(r["placed"] for r in rs) - min(r["submitted"] for r in rs) if rs else 0.0
        res.update(burst_n=n_burst, burst_done=len(recs), burst_errors=errors,
                   submit_rate=n_burst / submit_s, place_rate=len(rs) / span if span else 0.0,
                   burst_placed=[(r["placed"] - r["submitted"]) * 1000 for r in rs],
                   burst_started=_to_started(rs),
                   msgs_per_task=sum(sent.values()) / max(1, len(rs)),
                   msgs_by_kind={k: v / max(1, len(rs)) for k, v in sent.most_common() if v},
                   attempts=statistics.mean(r["attempt"] for r in rs) if rs else 0.0,
                   busiest=max(collections.Counter(r["node"] for r in rs).values(),
                               default=0))  # fmt: skip
        _stderr(f"burst: {len(recs)}/{n_burst} done, {errors} submit errors")
    finally:
        client.close()
    return res


def _measure_cluster(agents: int, n_latency: int, n_burst: int, keyed: bool,
                     bid_rounds: bool) -> dict[str, Any]:  # fmt: skip
    _stderr(f"starting {agents} agents ({'keyed' if keyed else 'plain'})")
    placement = {"direct_awards": False} if bid_rounds else None
    with LocalCluster(agents, log_level="WARNING", keyed=keyed, placement=placement,
                      resources={"cpus": 64, "memory": "64GiB"}) as cluster:  # fmt: skip
        cluster.start(timeout=60)
        cluster.wait_converged(timeout=60)
        addrs = [n.addr for n in cluster.nodes]
        return asyncio.run(_measure(addrs, n_latency, n_burst, cluster.credential))


def run(agents: int = 20, n_latency: int = 300, n_burst: int = 2000,
        bid_rounds: bool = False) -> str:  # fmt: skip
    """`bid_rounds`: direct awards off, so every task negotiates (the bid path under a burst,
    which a busy cluster takes: no node keeps half its CPUs free)."""
    plain = _measure_cluster(agents, n_latency, n_burst, keyed=False, bid_rounds=bid_rounds)
    keyed = _measure_cluster(agents, n_latency, n_burst, keyed=True, bid_rounds=bid_rounds)
    ms = "{:.2f}".format

    def ratio(k: float, p: float) -> str:
        return f"{k / p:.2f}×" if p else "–"

    lines = [
        "### Task placement, real agents",
        "",
        f"`python -m scenarios.bench.placement_real --agents {agents} --latency {n_latency} "
        f"--burst {n_burst}{' --bid-rounds' if bid_rounds else ''}`: {agents} agent processes "
        "on loopback, default SWIM and placement configuration (d = 2 bids, r = 3 replicas, "
        "predictive policy with the meta-learned forecaster"
        + ("; direct awards off, so every task negotiates" if bid_rounds else "")
        + "), tasks `true` at 0.05 CPU; the same measurements on a plain cluster and on "
        "a keyed one (CURVE on every connection), one after the other in the same run.",
        "",
        "| measure | plain p50 | plain p99 | keyed p50 | keyed p99 | keyed/plain p50 | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, target in (
        ("submit round trip, one at a time (ms; returns when on 3 replicas)", "rtt", ""),
        ("submit→placed, one at a time (ms)", "to_placed", "≤ 3 / ≤ 15"),
        ("submit→started, one at a time (ms)", "to_started", ""),
        ("submit→placed during the burst (ms)", "burst_placed", ""),
        ("submit→started during the burst (ms)", "burst_started", "p99 ≤ 15"),
    ):
        p, k = plain[key], keyed[key]
        lines.append(f"| {label} | {ms(_pct(p, .5))} | {ms(_pct(p, .99))} | {ms(_pct(k, .5))} | "
                     f"{ms(_pct(k, .99))} | {ratio(_pct(k, .5), _pct(p, .5))} | {target} |")
    lines.append("")
    for name, r in (("Plain", plain), ("Keyed", keyed)):
        lines += [
            f"- {name}: one at a time {r['lat_done']}/{r['lat_n']} tasks terminal, {r['lat_ok']} "
            f"succeeded. Burst of {r['burst_n']} tasks, {IN_FLIGHT} submits in flight: "
            f"**{r['place_rate']:.0f} placements/s** sustained (target ≥ 1,000); the client saw "
            f"{r['submit_rate']:.0f} accepted submits/s; {r['burst_done']}/{r['burst_n']} "
            f"terminal, {r['burst_errors']} submit errors, mean attempts {r['attempts']:.2f}; "
            f"the busiest agent ran {r['busiest']} of them (an even share: "
            f"{r['burst_n'] / agents:.0f}); "
            f"**{r['msgs_per_task']:.1f} placement messages per task** (all agents' sends from "
            "the burst's start until every task was terminal; by kind: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["msgs_by_kind"].items()) + ").",
        ]
    lines += [
        f"- CURVE's cost: placements/s keyed/plain = "
        f"{ratio(keyed['place_rate'], plain['place_rate'])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.placement_real",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--latency", type=int, default=300, help="tasks submitted one at a time")
    p.add_argument("--burst", type=int, default=2000, help="tasks in the throughput burst")
    p.add_argument("--bid-rounds", action="store_true",
                   help="direct awards off: every task negotiates (the bid path under a burst)")
    a = p.parse_args(argv)
    print(run(a.agents, a.latency, a.burst, a.bid_rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
