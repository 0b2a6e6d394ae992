"""Benchmark of real agent processes on loopback, with the default protocol configuration.

For each cluster size N, `deploy.local_cluster.LocalCluster` starts N agents (one process
each, default `SwimConfig`, default 1 s load interval) and this measures:

1. convergence: time from launching the first agent until every agent sees N alive;
2. resource-update propagation: a ``set_labels`` query to one agent publishes a new record
   version; all other agents are polled concurrently until each holds that version (or a
   newer one) with the label. Repeated, median and max reported;
3. crash detection: SIGKILL one agent, poll the survivors until each marks it failed (time
   to the first and to the last survivor; also the first "suspect" seen). Different agents
   are killed in successive repeats (no restart);
4. steady-state cost per agent process: CPU % and RSS (psutil over a window), messages sent
   and protocol messages received per second (from the agents' own counters).

Times are upper bounds at the polling resolution: each observer is polled in its own thread
with a ``members`` query, then sleeps a fixed interval; an observer's time is when the first
reply showing the condition arrived. The median poll period is reported with each result.

    python -m scenarios.bench.real [--sizes 20 50]     # prints the markdown section

`run()` returns the same markdown (embedded in docs/benchmarks.md by scenarios/bench.py).
Progress goes to stderr, one line per step. All agent processes are stopped on every exit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil

from deploy.client import ClientError, query
from deploy.local_cluster import LocalCluster
from gossip.config import SwimConfig
from scenarios.bench.machine import describe

UPDATE_REPEATS = 5
CRASH_REPEATS = 3
RESOURCE_WINDOW = 10.0  # seconds of steady state sampled for CPU / RSS / message rates
SETTLE = 3.0  # seconds to wait after convergence before sampling steady state
UPDATE_POLL = 0.05  # seconds between polls of one observer (propagation)
SLOW_POLL = 0.1  # seconds between polls of one observer (convergence, crash detection)
QUERY_TIMEOUT = 2.0

Rows = list[dict[str, Any]]
Check = Callable[[str, Rows, float], bool]  # (observer addr, its member rows, elapsed) -> done


def _stderr(msg: str) -> None:
    print(f"[bench_real] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- concurrent polling


@dataclass
class PollResult:
    done: dict[str, float]  # observer addr -> seconds until its check first held
    missing: list[str]  # observers whose check never held before the timeout
    periods: list[float] = field(default_factory=list)  # time between consecutive replies

    @property
    def all_s(self) -> float | None:
        return max(self.done.values()) if self.done and not self.missing else None

    @property
    def first_s(self) -> float | None:
        return min(self.done.values()) if self.done else None


def poll_all(
    addrs: Sequence[str], check: Check, t0: float, timeout: float, interval: float,
    pool: ThreadPoolExecutor,
) -> PollResult:  # fmt: skip
    """Poll every observer in its own thread until `check` holds for it (or `timeout`)."""
    lock = threading.Lock()
    result = PollResult({}, [])
    deadline = t0 + timeout

    def one(addr: str) -> None:
        last = None
        while time.monotonic() < deadline:
            try:
                rows = query(addr, "members", timeout=QUERY_TIMEOUT)
            except ClientError:
                rows = None
            now = time.monotonic()
            if last is not None:
                with lock:
                    result.periods.append(now - last)
            last = now
            if rows is not None and check(addr, rows, now - t0):
                with lock:
                    result.done[addr] = now - t0
                return
            time.sleep(interval)
        with lock:
            result.missing.append(addr)

    for f in [pool.submit(one, a) for a in addrs]:
        f.result()
    return result


def _row(rows: Rows, node: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("node") == node), None)


# ---------------------------------------------------------------- one cluster size


@dataclass
class SizeResult:
    n: int
    start_s: float = 0.0  # launch -> every agent answers queries
    converge_s: float | None = None  # launch -> every agent sees N alive
    converge_poll_s: float = 0.0
    update_all: list[float] = field(default_factory=list)  # per repeat: all observers have it
    update_each: list[float] = field(default_factory=list)  # every (repeat, observer) time
    update_missing: int = 0
    update_poll_s: float = 0.0
    crash: list[tuple[float | None, float | None, float | None]] = field(default_factory=list)
    crash_missing: int = 0
    crash_poll_s: float = 0.0
    cpu: list[float] = field(default_factory=list)  # % of one core, per agent
    rss: list[float] = field(default_factory=list)  # MiB, per agent
    sent_rate: list[float] = field(default_factory=list)  # messages/s sent, per agent
    recv_rate: list[float] = field(default_factory=list)  # protocol messages/s handled
    bytes_rate: list[float] = field(default_factory=list)  # bytes/s sent, per agent
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _measure_size(
    n: int, progress: Callable[[str], None], pool: ThreadPoolExecutor, update_repeats: int,
    crash_repeats: int, window: float,
) -> SizeResult:  # fmt: skip
    res = SizeResult(n)
    cluster = LocalCluster(n, log_level="WARNING", query_timeout=QUERY_TIMEOUT)
    try:
        # 1. start and converge ------------------------------------------------------------
        progress(f"N={n}: starting {n} agent processes (default SwimConfig)")
        t0 = time.monotonic()
        cluster.start(timeout=max(30.0, 1.5 * n))
        res.start_s = time.monotonic() - t0
        expected = {node.node_id for node in cluster.nodes}
        addrs = [node.addr for node in cluster.nodes]

        def converged(_addr: str, rows: Rows, _t: float) -> bool:
            return {r["node"] for r in rows if r.get("status") == "alive"} == expected

        pr = poll_all(addrs, converged, t0, 60.0 + n, SLOW_POLL, pool)
        res.converge_poll_s = _median(pr.periods)
        res.converge_s = pr.all_s
        if pr.missing:
            res.errors.append(f"N={n}: {len(pr.missing)} agents never saw {n} alive")
            progress(f"N={n}: NOT converged ({len(pr.missing)} agents short); skipping the rest")
            return res
        progress(f"N={n}: all answering after {res.start_s:.1f} s, "
                 f"all see {n} alive after {res.converge_s:.1f} s")  # fmt: skip

        # 4. steady-state cost (before any polling load) -------------------------------------
        time.sleep(SETTLE)
        progress(f"N={n}: sampling CPU, RSS and message rates for {window:.0f} s")
        _measure_resources(cluster, res, window, pool)

        # 2. resource-update propagation ---------------------------------------------------
        periods: list[float] = []
        for i in range(update_repeats):
            origin = cluster.nodes[(i * 7 + 1) % n]
            value = f"r{i}-{os.getpid()}"
            t0 = time.monotonic()
            rep = query(origin.addr, "set_labels", timeout=QUERY_TIMEOUT,
                        args={"labels": {"bench": value}})  # fmt: skip
            version = rep["version"]

            def has_update(_addr: str, rows: Rows, _t: float, node: str = origin.node_id,
                           version: int = version, value: str = value) -> bool:  # fmt: skip
                r = _row(rows, node)
                return (r is not None and (r.get("version") or 0) >= version
                        and r.get("labels", {}).get("bench") == value)  # fmt: skip

            observers = [a for a in addrs if a != origin.addr]
            pr = poll_all(observers, has_update, t0, 30.0, UPDATE_POLL, pool)
            periods += pr.periods
            res.update_each += list(pr.done.values())
            res.update_missing += len(pr.missing)
            if pr.all_s is not None:
                res.update_all.append(pr.all_s)
            progress(f"N={n}: update {i + 1}/{update_repeats} from {origin.node_id} reached "
                     f"all {len(observers)} others in "
                     + ("(timeout)" if pr.all_s is None else f"{pr.all_s:.2f} s"))  # fmt: skip
            time.sleep(0.5)
        res.update_poll_s = _median(periods)

        # 3. crash detection ---------------------------------------------------------------
        periods = []
        for i in range(crash_repeats):
            victim = cluster.nodes[n - 1 - i * max(1, n // (crash_repeats + 1))]
            survivors = [node.addr for node in cluster.running if node is not victim]
            suspect_at: dict[str, float] = {}

            def failed(addr: str, rows: Rows, t: float, node: str = victim.node_id,
                       suspect_at: dict[str, float] = suspect_at) -> bool:  # fmt: skip
                r = _row(rows, node)
                status = r.get("status") if r else None
                if status in ("suspect", "failed") and addr not in suspect_at:
                    suspect_at[addr] = t
                return status == "failed"

            t0 = time.monotonic()
            cluster.kill(victim.index)
            pr = poll_all(survivors, failed, t0, 60.0, SLOW_POLL, pool)
            periods += pr.periods
            res.crash_missing += len(pr.missing)
            first_suspect = min(suspect_at.values()) if suspect_at else None
            res.crash.append((first_suspect, pr.first_s, pr.all_s))
            progress(f"N={n}: SIGKILL {victim.node_id} ({i + 1}/{crash_repeats}): first suspect "
                     f"{_s(first_suspect)}, first failed {_s(pr.first_s)}, all {len(survivors)} "
                     f"survivors {_s(pr.all_s)}")  # fmt: skip
        res.crash_poll_s = _median(periods)
    except Exception as e:  # report what was measured so far, with the reason
        res.errors.append(f"N={n}: {type(e).__name__}: {e}")
        progress(f"N={n}: error: {type(e).__name__}: {e}")
    finally:
        progress(f"N={n}: stopping agents")
        cluster.cleanup()
    return res


def _measure_resources(cluster: LocalCluster, res: SizeResult, window: float,
                       pool: ThreadPoolExecutor) -> None:  # fmt: skip
    procs = [psutil.Process(node.proc.pid) for node in cluster.nodes]

    def stats_all() -> list[dict[str, Any] | None]:
        def one(addr: str) -> dict[str, Any] | None:
            try:
                return query(addr, "stats", timeout=QUERY_TIMEOUT)
            except ClientError:
                return None

        return list(pool.map(one, [node.addr for node in cluster.nodes]))

    for p in procs:
        p.cpu_percent(None)
    before, t_before = stats_all(), time.monotonic()
    time.sleep(window)
    cpu = [p.cpu_percent(None) for p in procs]
    rss = [p.memory_info().rss / 2**20 for p in procs]
    after, t_after = stats_all(), time.monotonic()
    dt = t_after - t_before
    res.window_s = dt
    res.cpu, res.rss = cpu, rss
    for b, a in zip(before, after, strict=True):
        if a is None or b is None:
            continue

        def grown(*keys: str, a: dict = a, b: dict = b) -> float:
            """Stream and datagram counters together: probes ride datagrams."""
            return sum(a["transport"].get(k, 0) - b["transport"].get(k, 0) for k in keys) / dt

        res.sent_rate.append(grown("sent", "datagrams_sent"))
        res.recv_rate.append((a["agent"].get("messages", 0) - b["agent"].get("messages", 0)) / dt)
        res.bytes_rate.append(grown("bytes_sent", "datagram_bytes_sent"))


# ---------------------------------------------------------------- report


def _s(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f} s"


def _mean_max(xs: Sequence[float], fmt: str) -> str:
    if not xs:
        return "—"
    return f"{format(statistics.fmean(xs), fmt)} / {format(max(xs), fmt)}"


def _config_lines(cfg: SwimConfig, sizes: Sequence[int]) -> list[str]:
    bounds = ", ".join(
        f"N={n}: {cfg.suspicion_bounds(n)[0]:.2f}–{cfg.suspicion_bounds(n)[1]:.1f} s" for n in sizes
    )
    keys = ("probe_interval", "probe_timeout", "gossip_interval", "gossip_fanout",
            "gossip_max_items", "retransmit_mult", "suspicion_mult", "suspicion_max_mult",
            "suspicion_confirmations", "push_pull_interval")  # fmt: skip
    vals = ", ".join(f"`{k}={getattr(cfg, k):g}`" for k in keys)
    return [
        f"Configuration: the default `SwimConfig` ({vals}); load sampled every 1 s and "
        f"published on a change of 5 % or every 10 s. Suspicion timeout bounds: {bounds}.",
    ]


def report(results: Sequence[SizeResult], machine: str, elapsed: float) -> str:
    lines = [
        "## Real agents on loopback (default configuration)",
        "",
        "`python -m scenarios.bench.real` — one agent process per node on 127.0.0.1, started "
        "with `deploy/local_cluster.py`.",
        "",
        *_config_lines(SwimConfig(), [r.n for r in results]),
        "",
        f"Machine: {machine}. Run took {elapsed:.0f} s.",
        "",
        "| N | all answering | all see N alive (after all answering) | update → all others, "
        "median / max (repeats) | update → one observer, median | crash: first suspect, "
        "median | crash: first failed, median | crash: all survivors failed, median / max "
        "(repeats) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        upd = (f"{_median(r.update_all):.2f} / {max(r.update_all):.2f} s "
               f"({len(r.update_all)})" if r.update_all else "—")  # fmt: skip
        alls = [c[2] for c in r.crash if c[2] is not None]
        firsts = [c[1] for c in r.crash if c[1] is not None]
        sus = [c[0] for c in r.crash if c[0] is not None]
        crash_all = f"{_median(alls):.2f} / {max(alls):.2f} s ({len(alls)})" if alls else "—"
        conv_after = "—" if r.converge_s is None else f"+{r.converge_s - r.start_s:.1f} s"
        lines.append(
            f"| {r.n} | {r.start_s:.1f} s | {_s(r.converge_s, 1)} ({conv_after}) | {upd} | "
            f"{_s(_median(r.update_each) if r.update_each else None)} | "
            f"{_s(_median(sus) if sus else None)} | {_s(_median(firsts) if firsts else None)} | "
            f"{crash_all} |"
        )
    lines += [
        "",
        "Steady state per agent process (after convergence, before the other measurements; "
        "mean / max over the N agents):",
        "",
        "| N | window | CPU % of one core | RSS MiB | messages sent/s | protocol messages "
        "received/s | bytes sent/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.n} | {r.window_s:.1f} s | {_mean_max(r.cpu, '.1f')} | "
            f"{_mean_max(r.rss, '.1f')} | {_mean_max(r.sent_rate, '.1f')} | "
            f"{_mean_max(r.recv_rate, '.1f')} | {_mean_max(r.bytes_rate, ',.0f')} |"
        )
    polls = "; ".join(
        f"N={r.n}: convergence {r.converge_poll_s * 1000:.0f} ms, update "
        f"{r.update_poll_s * 1000:.0f} ms, crash {r.crash_poll_s * 1000:.0f} ms"
        for r in results
    )
    lines += [
        "",
        "How to read it:",
        "",
        "- Times are from the triggering action (first agent launched / `set_labels` sent / "
        "SIGKILL) until a polled `members` reply first showed the condition; every observer "
        "is polled in its own thread, so each time is an upper bound by at most one poll "
        f"period. Median poll period per observer (query round trip + sleep): {polls}.",
        '- "all answering" is dominated by Python process start-up; "all see N alive" includes it.',
        "- Update propagation: the target is ≤ 1.5 s with a 200 ms gossip interval. An update "
        "counts as received when the observer holds the record version returned by "
        "`set_labels` (or newer) carrying the new label.",
        "- Crash detection is bounded below by the suspicion timeout (see the bounds above): "
        "a suspect is declared failed after the minimum only once "
        "`suspicion_confirmations` independent members suspect it.",
        "- The polling itself costs CPU on the same machine, and every agent shares 2 cores, "
        "so larger N measures a busier machine as much as the protocol.",
    ]
    errors = [e for r in results for e in r.errors]
    missing = [(r.n, r.update_missing, r.crash_missing) for r in results
               if r.update_missing or r.crash_missing]  # fmt: skip
    if errors or missing:
        lines += ["", "Problems during the run:", ""]
        lines += [f"- {e}" for e in errors]
        lines += [f"- N={n}: {u} update observations and {c} crash observations timed out"
                  for n, u, c in missing]  # fmt: skip
    return "\n".join(lines) + "\n"


def run(
    sizes: Sequence[int] = (20, 50), *, update_repeats: int = UPDATE_REPEATS,
    crash_repeats: int = CRASH_REPEATS, window: float = RESOURCE_WINDOW,
    progress: Callable[[str], None] | None = _stderr,
) -> str:  # fmt: skip
    """Measure every size in turn and return the markdown section."""
    say = progress or (lambda _m: None)
    machine = describe(with_load=True)
    t0 = time.monotonic()
    results: list[SizeResult] = []
    with ThreadPoolExecutor(max_workers=max(sizes) + 4, thread_name_prefix="poll") as pool:
        for n in sizes:
            results.append(_measure_size(n, say, pool, update_repeats, crash_repeats, window))
    elapsed = time.monotonic() - t0
    say(f"done in {elapsed:.0f} s")
    return report(results, machine, elapsed)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scenarios.bench.real",
        description="Benchmark real agent processes on loopback; print a markdown section.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50], metavar="N",
                   help="cluster sizes to measure (default 20 50)")  # fmt: skip
    p.add_argument(
        "--update-repeats",
        type=int,
        default=UPDATE_REPEATS,
        metavar="K",
        help=f"resource updates timed per size (default {UPDATE_REPEATS})",
    )
    p.add_argument(
        "--crash-repeats",
        type=int,
        default=CRASH_REPEATS,
        metavar="K",
        help=f"agents SIGKILLed per size (default {CRASH_REPEATS})",
    )
    p.add_argument(
        "--window",
        type=float,
        default=RESOURCE_WINDOW,
        metavar="S",
        help=f"steady-state sampling window (default {RESOURCE_WINDOW:g} s)",
    )
    a = p.parse_args(argv)
    if any(n < 2 for n in a.sizes) or a.crash_repeats >= min(a.sizes):
        p.error("every size must be >= 2 and larger than --crash-repeats")
    print(run(a.sizes, update_repeats=a.update_repeats, crash_repeats=a.crash_repeats,
              window=a.window), end="")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
