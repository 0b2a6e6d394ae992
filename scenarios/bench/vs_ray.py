"""agora beside Ray on this machine, for the same job, alternating in one run.

Each round measures agora, then Ray, on the same machine, so that the ratios come from one run
under the same background load rather than from two runs on different days:

- agora: a `LocalCluster` of A agents (default 20; default SWIM and placement configuration,
  64 CPUs and 64 GiB each, so capacity never limits), started and converged, then stopped at
  the end of the round; tasks ``{"argv": ["true"], "cpus": 0.05}`` submitted to random agents
  through placement_real's asyncio client.
- Ray: one local node (``ray.init(num_cpus=<cores>)``), a ``num_cpus=0.05`` remote function
  that runs ``true`` in a subprocess and returns the time it started; shut down at the end
  of the round.

Both are warmed up with a few tasks (Ray's first call starts a worker and exports the
function). Then, for each system:

1. submit→started, one task in flight: each task is submitted once the one before is terminal.
   agora: the record's ``started − submitted`` (both stamped by agents; all processes share
   this machine's clock). Ray: the start time the function returns minus the client's clock
   just before ``.remote()``.
2. CPU per task: /proc/stat is sampled every 50 ms for the whole machine (busy = user + nice +
   system + irq + softirq + steal). The idle system's busy rate over a 5 s window before the
   burst, times the burst's duration, is taken off the busy CPU seconds of the burst window,
   and the rest divided by the tasks.
3. Burst: N tasks submitted at once (agora: IN_FLIGHT submits outstanding; Ray: every
   ``.remote()`` then one wait for them all). Completed tasks/s = tasks that succeeded / (end
   of the last task − the client's clock before the first submit). The end is the last
   record's ``finished`` for agora (the runner's clock when the process exited) and the
   client's clock when the wait for all returned for Ray. agora's records also give the
   attempts: a task placed more than once was refused by a node (a direct award finds the
   node full) or re-placed; the workers' count of runs started says whether any ran twice, a
   failure of the guarantee.
   agora's records also give submit→started under the burst (``started − submitted``, the
   entry's receipt of the submit to the run's start; a submit waiting in the client's window
   of IN_FLIGHT is not counted). Ray has no such figure: it holds every task from the start.
4. agora only: false failure declarations. Every agent stays up, so any suspicion raised or
   failure declared during the burst (the agents' ``suspect_raised`` and ``declared_dead``
   membership counters from the ``stats`` query, summed over agents) is a false one.

    python -m scenarios.bench.vs_ray [--agents 20] [--burst 2000] [--latency 200] [--rounds 2]

`run()` returns the markdown section (also a section of ``python -m scenarios.bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray

from agent.tasks import TaskState
from deploy.client import query
from deploy.local_cluster import LocalCluster
from scenarios.bench.machine import describe
from scenarios.bench.placement_real import IN_FLIGHT, TASK, _Client, _pct, _records, submit_all

TERMINAL = frozenset(s.label for s in TaskState if s.terminal)
WARMUP = 5  # tasks run one after another before measuring
SETTLE = 2.0  # s of quiet after the latency tasks, before the idle window
IDLE_WINDOW = 5.0  # s over which the idle system's busy CPU rate is measured
CPU_SAMPLE = 0.05  # s between /proc/stat samples
POLL = 0.01  # s between status queries while waiting for one task
TASK_TIMEOUT = 30.0  # s a task submitted alone may take before it counts as failed
CLK_TCK = os.sysconf("SC_CLK_TCK")
RAY_CPUS = os.cpu_count() or 1


def _stderr(msg: str) -> None:
    print(f"[bench_vs_ray] {msg}", file=sys.stderr, flush=True)


@ray.remote(num_cpus=TASK["cpus"])
def _ray_true() -> float:
    """The job of one agora task, as a Ray task; returns when it started, by this clock."""
    started = time.time()
    subprocess.run(TASK["argv"], check=True)
    return started


def _busy_seconds() -> float:
    """CPU seconds this machine has spent busy since boot, all cores together."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class _BusyCpu:
    """Busy CPU seconds sampled in a thread, so that a window whose end is only known later
    (the last task's end, read from its record) can be cut out of the samples afterwards."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _BusyCpu:
        self.samples.append((time.time(), _busy_seconds()))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), _busy_seconds()))

    def _sample(self) -> None:
        while not self._stop.wait(CPU_SAMPLE):
            self.samples.append((time.time(), _busy_seconds()))

    def _at(self, t: float) -> float:
        times = [s[0] for s in self.samples]
        i = min(max(bisect.bisect_left(times, t), 1), len(times) - 1)
        (t0, b0), (t1, b1) = self.samples[i - 1], self.samples[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else b1

    def between(self, t0: float, t1: float) -> float:
        return self._at(t1) - self._at(t0)


@dataclass
class Figures:
    """One system's figures for one round."""

    rate: float  # burst tasks that succeeded per second of the burst
    cpu_ms: float  # busy CPU per burst task, the idle system's share taken off
    p50: float  # submit→started, one task in flight (ms)
    p99: float
    span: float  # s from the first submit to the end of the last task
    idle_cpus: float  # busy CPU seconds per second of the idle system
    burst_failed: int  # burst tasks that did not succeed (or never became terminal)
    latency_failed: int
    # agora only
    burst_p99: float = math.nan  # submit→started under the burst (ms; from the entry's receipt)
    submit_errors: int = 0
    attempts: float = 0.0  # mean over burst records
    placed_again: int = 0  # burst tasks placed more than once (a refused award, or a re-placement)
    run_again: int = 0  # runs started during the burst beyond one per task
    suspicions: int = 0
    declarations: int = 0
    agents_down: int = 0  # agents no longer running after the burst


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return (_pct(ms, 0.5), _pct(ms, 0.99)) if ms else (math.nan, math.nan)


def _cpu_per_task_ms(cpu: _BusyCpu, idle: tuple[float, float], burst: tuple[float, float],
                     tasks: int) -> tuple[float, float]:  # fmt: skip
    """(busy CPU ms per task over the burst beyond the idle rate, the idle rate). NaN when
    the burst window was no busier than the idle rate predicts: other work on the machine
    dropped meanwhile, and the difference measures that, not the burst."""
    idle_cpus = cpu.between(*idle) / (idle[1] - idle[0])
    extra = cpu.between(*burst) - idle_cpus * (burst[1] - burst[0])
    return (extra / tasks * 1000 if extra > 0 else math.nan), idle_cpus


def _ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


# ---------------------------------------------------------------------- agora


async def _terminal_row(client: _Client, addr: str, task_id: str) -> dict | None:
    deadline = time.monotonic() + TASK_TIMEOUT
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        try:
            row = await client.ask(addr, "status", {"id": task_id})
        except (RuntimeError, TimeoutError):
            continue
        if row["state"] in TERMINAL:
            return row
    return None


async def _one_at_a_time(client: _Client, addrs: list[str], ids: list[str],
                         rng: random.Random) -> list[dict | None]:  # fmt: skip
    """Final records, each task submitted once the one before is terminal (None: lost)."""
    rows: list[dict | None] = []
    for task_id in ids:
        addr = rng.choice(addrs)
        try:
            await client.ask(addr, "submit", {"id": task_id, "spec": TASK})
        except (RuntimeError, TimeoutError):
            rows.append(None)
            continue
        rows.append(await _terminal_row(client, addr, task_id))
    return rows


def _placement_sum(addrs: list[str], counter: str) -> int:
    return sum(query(a, "stats", 5.0)["placement"].get(counter, 0) for a in addrs)


def _results_recorded(addrs: list[str]) -> int:
    return _placement_sum(addrs, "results_recorded")


async def _quietly_until_recorded(addrs: list[str], before: int, n: int) -> None:
    """Wait until the owners have recorded `n` more results, asking only the agents' counters:
    polling every task's status meanwhile (a fan-out to its replicas) loaded the agents during
    the very burst being measured."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_results_recorded, addrs) - before >= n:
            return
        await asyncio.sleep(0.25)


def _membership_counters(addrs: list[str]) -> tuple[int, int]:
    """(suspicions raised, failure declarations) summed over the agents."""
    cores = [query(a, "stats", 5.0)["core"] for a in addrs]
    return (sum(c.get("suspect_raised", 0) for c in cores),
            sum(c.get("declared_dead", 0) for c in cores))  # fmt: skip


async def _measure_agora(addrs: list[str], n_burst: int, n_latency: int,
                         still_running: Callable[[], int]) -> Figures:  # fmt: skip
    client = _Client(addrs)
    rng = random.Random(0)
    try:
        await _one_at_a_time(client, addrs, [f"warm-{i}" for i in range(WARMUP)], rng)
        rows = await _one_at_a_time(client, addrs, [f"lat-{i}" for i in range(n_latency)], rng)
        to_started = [(r["started"] - r["submitted"]) * 1000 for r in rows if r and r["started"]]
        latency_failed = sum(r is None or r["state"] != "succeeded" for r in rows)
        _stderr(f"agora: {n_latency - latency_failed}/{n_latency} one-at-a-time tasks succeeded")

        await asyncio.sleep(SETTLE)
        with _BusyCpu() as cpu:
            idle0 = time.time()
            await asyncio.sleep(IDLE_WINDOW)
            idle1 = time.time()
            suspicions0, declarations0 = _membership_counters(addrs)
            ids = [f"burst-{i}" for i in range(n_burst)]
            recorded0 = _results_recorded(addrs)
            started0 = _placement_sum(addrs, "runs_started")
            first_submit = time.time()
            submit_errors = await submit_all(client, addrs, ids, rng)
            await _quietly_until_recorded(addrs, recorded0, n_burst)
            recs = await _records(client, addrs, ids)
            suspicions1, declarations1 = _membership_counters(addrs)
            runs = _placement_sum(addrs, "runs_started") - started0
        ends = [r["finished"] for r in recs.values() if r["finished"]]
        last_end = max(ends) if ends else first_submit
        succeeded = sum(r["state"] == "succeeded" for r in recs.values())
        span = last_end - first_submit
        cpu_ms, idle_cpus = _cpu_per_task_ms(cpu, (idle0, idle1), (first_submit, last_end),
                                             n_burst)  # fmt: skip
        attempts = [r["attempt"] for r in recs.values()]
        _stderr(f"agora: burst {succeeded}/{n_burst} succeeded in {span:.1f} s")
        p50, p99 = _percentiles(to_started)
        _, burst_p99 = _percentiles([(r["started"] - r["submitted"]) * 1000
                                     for r in recs.values() if r["started"]])  # fmt: skip
        return Figures(
            rate=succeeded / span if span > 0 else 0.0, cpu_ms=cpu_ms, p50=p50, p99=p99,
            burst_p99=burst_p99,
            span=span, idle_cpus=idle_cpus, burst_failed=n_burst - succeeded,
            latency_failed=latency_failed, submit_errors=submit_errors,
            attempts=statistics.mean(attempts) if attempts else 0.0,
            placed_again=sum(a > 1 for a in attempts), run_again=runs - n_burst,
            suspicions=suspicions1 - suspicions0,
            declarations=declarations1 - declarations0,
            agents_down=len(addrs) - still_running(),
        )  # fmt: skip
    finally:
        client.close()


def _agora_round(agents: int, n_burst: int, n_latency: int) -> Figures:
    _stderr(f"agora: starting {agents} agents")
    with LocalCluster(agents, log_level="WARNING",
                      resources={"cpus": 64, "memory": "64GiB"}) as cluster:  # fmt: skip
        cluster.start(timeout=60)
        cluster.wait_converged(timeout=60)
        addrs = [n.addr for n in cluster.nodes]
        return asyncio.run(_measure_agora(addrs, n_burst, n_latency,
                                          lambda: len(cluster.running)))  # fmt: skip


# ---------------------------------------------------------------------- Ray


def _ray_failures(refs: list[ray.ObjectRef]) -> int:
    """How many of these finished Ray tasks raised (ray.get of all stops at the first)."""
    try:
        ray.get(refs)
        return 0
    except ray.exceptions.RayError:
        failed = 0
        for ref in refs:
            try:
                ray.get(ref)
            except ray.exceptions.RayError:
                failed += 1
        return failed


def _ray_round(n_burst: int, n_latency: int) -> Figures:
    _stderr(f"Ray: starting a local node, num_cpus={RAY_CPUS}")
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    try:
        for _ in range(WARMUP):
            ray.get(_ray_true.remote())
        to_started, latency_failed = [], 0
        for _ in range(n_latency):
            before = time.time()
            try:
                to_started.append((ray.get(_ray_true.remote()) - before) * 1000)
            except ray.exceptions.RayError:
                latency_failed += 1
        _stderr(f"Ray: {n_latency - latency_failed}/{n_latency} one-at-a-time tasks succeeded")

        time.sleep(SETTLE)
        with _BusyCpu() as cpu:
            idle0 = time.time()
            time.sleep(IDLE_WINDOW)
            idle1 = time.time()
            first_submit = time.time()
            refs = [_ray_true.remote() for _ in range(n_burst)]
            ray.wait(refs, num_returns=len(refs), timeout=None)
            last_end = time.time()
        burst_failed = _ray_failures(refs)
        span = last_end - first_submit
        cpu_ms, idle_cpus = _cpu_per_task_ms(cpu, (idle0, idle1), (first_submit, last_end),
                                             n_burst)  # fmt: skip
        _stderr(f"Ray: burst {n_burst - burst_failed}/{n_burst} succeeded in {span:.1f} s")
        p50, p99 = _percentiles(to_started)
        return Figures(rate=(n_burst - burst_failed) / span, cpu_ms=cpu_ms, p50=p50, p99=p99,
                       span=span, idle_cpus=idle_cpus, burst_failed=burst_failed,
                       latency_failed=latency_failed)  # fmt: skip
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------- report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b and not (math.isnan(a) or math.isnan(b)) else "–"


def run(agents: int = 20, n_burst: int = 2000, n_latency: int = 200, rounds: int = 2) -> str:
    machine = describe(with_load=True)
    results: list[tuple[Figures, Figures]] = []  # (agora, Ray) per round
    for i in range(1, rounds + 1):
        _stderr(f"round {i}/{rounds}")
        results.append((_agora_round(agents, n_burst, n_latency), _ray_round(n_burst, n_latency)))

    def median(system: int, field: str) -> float:
        """Over the rounds that measured it (NaN if none did)."""
        values = [getattr(r[system], field) for r in results]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    rate_a, rate_r = median(0, "rate"), median(1, "rate")
    cpu_a, cpu_r = median(0, "cpu_ms"), median(1, "cpu_ms")
    p50_a, p50_r = median(0, "p50"), median(1, "p50")
    p99_a, p99_r = median(0, "p99"), median(1, "p99")
    burst_p99 = median(0, "burst_p99")
    declarations = sum(a.declarations for a, _ in results)
    suspicions = sum(a.suspicions for a, _ in results)
    checks = {
        "completed tasks/s ≥ 2× Ray and ≥ 1,000": rate_a >= 2 * rate_r and rate_a >= 1000,
        "CPU per task ≤ 2 ms": cpu_a <= 2,
        "submit→started p50 ≤ Ray's": p50_a <= p50_r,
        "submit→started p99 ≤ 15 ms under the burst": burst_p99 <= 15,
        "no false failure declarations": declarations == 0,
    }
    met = [k for k, ok in checks.items() if ok]
    missed = [k for k, ok in checks.items() if not ok]
    if math.isnan(cpu_a):
        missed.remove("CPU per task ≤ 2 ms")
        missed.append("CPU per task not measured (n/a: the machine's other load fell during "
                      "every burst; rerun on a quiet machine)")
    lines = [
        "### Burst throughput beside Ray (same machine, alternating)",
        "",
        f"`python -m scenarios.bench.vs_ray --agents {agents} --burst {n_burst} "
        f"--latency {n_latency} --rounds {rounds}`: {rounds} round(s) of agora ({agents} agent "
        f"processes on loopback, default configuration), then Ray (one local node, num_cpus = "
        f"{RAY_CPUS}), for the same job: tasks running `true` at 0.05 CPU, {n_latency} one "
        f"after another, then a burst of {n_burst} (agora: {IN_FLIGHT} submits in flight; "
        "Ray: all submitted, then one wait). Figures are medians over rounds. CPU is the whole "
        f"machine's busy time over the burst, minus the idle system's rate over {IDLE_WINDOW:g} s "
        "before it. Method: the module docstring of scenarios/bench/vs_ray.py.",
        "",
        f"Machine: {machine}.",
        "",
        "| measure | Ray | agora | agora/Ray | target |",
        "|---|---|---|---|---|",
        f"| completed tasks/s | {rate_r:.0f} | {rate_a:.0f} | {_ratio(rate_a, rate_r)} | "
        "≥ 2× Ray and ≥ 1,000 |",
        f"| CPU per task (ms) | {_ms(cpu_r)} | {_ms(cpu_a)} | {_ratio(cpu_a, cpu_r)} | ≤ 2 ms |",
        f"| submit→started p50, one in flight (ms) | {p50_r:.2f} | {p50_a:.2f} | "
        f"{_ratio(p50_a, p50_r)} | ≤ Ray's |",
        f"| submit→started p99, one in flight (ms) | {p99_r:.2f} | {p99_a:.2f} | "
        f"{_ratio(p99_a, p99_r)} |  |",
        f"| submit→started p99 under the burst (ms; agora: from the entry's receipt, "
        f"{IN_FLIGHT} in flight) | – | {burst_p99:.2f} | – | ≤ 15 ms |",
        f"| false failure declarations during the burst (all rounds) | – | {declarations} | – "
        "| 0 |",
        "",
    ]
    for i, (a, r) in enumerate(results, 1):
        lines.append(
            f"- Round {i}: agora {a.rate:.0f} tasks/s ({n_burst} in {a.span:.2f} s), "
            f"{_ms(a.cpu_ms)} ms CPU per task (idle cluster {a.idle_cpus:.2f} CPUs busy), "
            f"submit→started p50 {a.p50:.2f} / p99 {a.p99:.2f} ms; Ray {r.rate:.0f} tasks/s "
            f"({n_burst} in {r.span:.2f} s), {_ms(r.cpu_ms)} ms CPU per task (idle node "
            f"{r.idle_cpus:.2f} CPUs busy), p50 {r.p50:.2f} / p99 {r.p99:.2f} ms."
        )
    for i, (a, r) in enumerate(results, 1):
        lines.append(
            f"- Round {i} failures: agora burst {a.burst_failed}/{n_burst} did not succeed, "
            f"{a.submit_errors} submits unconfirmed in time (not retried), mean attempts "
            f"{a.attempts:.2f}, {a.placed_again} tasks placed more than once, **{a.run_again} "
            "runs started beyond one per task**; one at a time "
            f"{a.latency_failed}/{n_latency} did not succeed. Ray burst {r.burst_failed}/"
            f"{n_burst}, one at a time {r.latency_failed}/{n_latency} did not succeed. "
            f"Membership during agora's burst: {a.suspicions} suspicions raised, "
            f"{a.declarations} failures declared, {a.agents_down} agents down."
        )
    lines += [
        f"- Over all rounds, agora's agents raised {suspicions} suspicions and declared "
        f"{declarations} failures of agents that were up throughout.",
        f"- Targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.vs_ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--agents", type=_positive, default=20, help="agora agent processes")
    p.add_argument("--burst", type=_positive, default=2000, help="tasks in the burst")
    p.add_argument("--latency", type=_positive, default=200, help="tasks one in flight")
    p.add_argument("--rounds", type=_positive, default=2, help="agora, Ray alternations")
    a = p.parse_args(argv)
    print(run(a.agents, a.burst, a.latency, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
