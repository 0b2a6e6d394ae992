"""Benchmark of many real agents launched with Ray (`deploy.ray_launcher.RayCluster`).

For each cluster size N: N agents with the default `SwimConfig` (load sampled every 1 s), 25
agents per Ray actor (one process and one event loop per actor, each agent with its own ZeroMQ
port), agent 0 first and the others joining through it. Measured:

1. start: launch -> every agent bound and joined (Ray already running; actors included);
2. convergence: from "all joined" until every agent sees N alive;
3. steady-state cost per actor process (CPU % of one core, RSS) over a window, with psutil on
   the actor PIDs (`AgentHost.pid()`);
4. crash detection: one agent crashed (its sockets closed, no leave; its actor's other agents
   keep running) -> first survivor to suspect it, first to mark it failed, ALL survivors mark it
   failed; repeated with different victims;
5. graceful leave: one agent leaves -> all survivors show it "left".

Polling: every agent's view is read in its own process by its actor (`AgentHost.statuses` /
`status_of`, one Ray call per actor per poll, all agents every poll, no sampling), so the
polling adds no ZeroMQ traffic to the agents' sockets. Times are upper bounds at the poll
period, reported with the results.

    python -m scenarios.bench.ray_agents [--sizes 100 200]    # prints the markdown section

Progress goes to stderr. Ray is started once (``num_cpus`` = this machine's cores) and shut down
at the end; every actor is killed after each size, even on error.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from deploy.ray_launcher import RayCluster
from gossip.config import SwimConfig
from scenarios.bench.machine import describe

PER_ACTOR = 25
CRASH_REPEATS = 2
WINDOW = 10.0  # seconds of steady state sampled for CPU / RSS
SETTLE = 3.0
POLL = 0.1  # seconds between polls


def _stderr(msg: str) -> None:
    print(f"[bench_ray] {msg}", file=sys.stderr, flush=True)


@dataclass
class SizeResult:
    n: int
    actors: int = 0
    start_s: float | None = None
    converge_s: float | None = None
    cpu: list[float] = field(default_factory=list)  # % of one core, per actor process
    rss: list[float] = field(default_factory=list)  # MiB, per actor process
    machine_cpu: float | None = None  # % of all cores, whole machine, same window
    crash: list[tuple[float | None, float | None, float | None]] = field(default_factory=list)
    leave_s: float | None = None
    polls: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _poll(fn: Callable[[], Any], done: Callable[[Any, float], bool], timeout: float,
          res: SizeResult) -> float | None:  # fmt: skip
    """Call fn() every POLL s until done(value, elapsed); elapsed seconds, or None on timeout."""
    t0 = last = time.monotonic()
    while True:
        value = fn()
        now = time.monotonic()
        res.polls.append(now - last)
        last = now
        if done(value, now - t0):
            return now - t0
        if now - t0 > timeout:
            return None
        time.sleep(POLL)


def _measure(n: int, say: Callable[[str], None], crash_repeats: int, window: float) -> SizeResult:
    import ray

    res = SizeResult(n)
    c = RayCluster(n, PER_ACTOR, swim=None, log_level="WARNING", start_timeout=max(60.0, n * 0.5))
    res.actors = c.n_actors
    try:
        say(f"N={n}: starting {n} agents in {c.n_actors} actors (default SwimConfig)")
        res.start_s = c.start()
        say(f"N={n}: all bound and joined after {res.start_s:.1f} s")

        def statuses() -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for part in ray.get([a.statuses.remote() for a in c.actors]):
                out.update(part)
            return out

        def status_of(node: str) -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for part in ray.get([a.status_of.remote(node) for a in c.actors]):
                out.update(part)
            return out

        def converged(views: dict[str, dict[str, int]], _t: float) -> bool:
            live = len(c.alive_indices)
            return len(views) == live and all(v.get("alive") == live for v in views.values())

        res.converge_s = _poll(statuses, converged, 60.0 + n / 2, res)
        if res.converge_s is None:
            short = sum(v.get("alive") != n for v in statuses().values())
            res.errors.append(f"N={n}: not converged ({short} agents see fewer than {n} alive)")
            say(f"N={n}: NOT converged; skipping the rest")
            return res
        say(f"N={n}: every agent sees {n} alive {res.converge_s:.1f} s after all joined")

        time.sleep(SETTLE)
        say(f"N={n}: sampling CPU and RSS of the {len(c.pids)} actor processes for {window:g} s")
        procs = [psutil.Process(pid) for pid in c.pids]
        for p in procs:
            p.cpu_percent(None)
        psutil.cpu_percent(None)
        time.sleep(window)
        res.cpu = [p.cpu_percent(None) for p in procs]
        res.rss = [p.memory_info().rss / 2**20 for p in procs]
        res.machine_cpu = psutil.cpu_percent(None)

        for k in range(crash_repeats):
            victim = n - 1 - k * PER_ACTOR  # in a different actor each time
            node = c.node_ids[victim]
            seen: dict[str, float] = {}

            def failed(view: dict[str, str | None], t: float,
                       seen: dict[str, float] = seen) -> bool:  # fmt: skip
                if "suspect" not in seen and any(s in ("suspect", "failed") for s in view.values()):
                    seen["suspect"] = t
                if "failed" not in seen and any(s == "failed" for s in view.values()):
                    seen["failed"] = t
                return bool(view) and all(s == "failed" for s in view.values())

            c.crash(victim)
            all_s = _poll(lambda node=node: status_of(node), failed, 60.0, res)
            res.crash.append((seen.get("suspect"), seen.get("failed"), all_s))
            say(f"N={n}: crash {k + 1}/{crash_repeats} of {node}: first suspect "
                f"{_s(seen.get('suspect'))}, first failed {_s(seen.get('failed'))}, all "
                f"{n - 1 - k} survivors {_s(all_s)}")  # fmt: skip

        leaver = 1
        t0 = time.monotonic()
        c.leave(leaver)  # returns after the leave linger
        lingered = time.monotonic() - t0
        node = c.node_ids[leaver]
        rest = _poll(
            lambda: status_of(node),
            lambda v, _t: bool(v) and all(s == "left" for s in v.values()),
            30.0,
            res,
        )
        res.leave_s = None if rest is None else lingered + rest
        say(f"N={n}: graceful leave of {node} seen as left by all after {_s(res.leave_s)}")
    except Exception as e:
        res.errors.append(f"N={n}: {type(e).__name__}: {str(e).splitlines()[0]}")
        say(f"N={n}: error: {type(e).__name__}: {e}")
    finally:
        say(f"N={n}: stopping")
        c.stop(graceful=False)
    return res


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _med(xs: Sequence[float | None]) -> str:
    got = [x for x in xs if x is not None]
    return "—" if not got else f"{statistics.median(got):.2f} s"


def report(results: Sequence[SizeResult], machine: str, elapsed: float) -> str:
    cfg = SwimConfig()
    bounds = ", ".join(f"N={r.n}: {cfg.suspicion_bounds(r.n)[0]:.2f}–"
                       f"{cfg.suspicion_bounds(r.n)[1]:.1f} s" for r in results)  # fmt: skip
    polls = [p for r in results for p in r.polls]
    lines = [
        "## Many agents with Ray (default configuration)",
        "",
        "`python -m scenarios.bench.ray_agents` — `deploy/ray_launcher.py`: "
        f"{PER_ACTOR} agents per Ray actor (one process, one event loop, one ZeroMQ port per "
        "agent) on 127.0.0.1; default "
        f"`SwimConfig` (`probe_interval={cfg.probe_interval:g}`, "
        f"`gossip_interval={cfg.gossip_interval:g}`, `suspicion_mult={cfg.suspicion_mult:g}`), "
        f"load sampled every 1 s. Suspicion timeout bounds: {bounds}.",
        "",
        f"Machine: {machine}. Run took {elapsed:.0f} s.",
        "",
        "| N | actors | start → all joined | all joined → all see N alive | crash: first "
        "suspect | crash: first failed | crash: all survivors failed (each repeat) | leave: "
        "all see left |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        each = ", ".join(_s(c[2]) for c in r.crash) or "—"
        lines.append(
            f"| {r.n} | {r.actors} | {_s(r.start_s)} | {_s(r.converge_s)} | "
            f"{_med([c[0] for c in r.crash])} | {_med([c[1] for c in r.crash])} | {each} | "
            f"{_s(r.leave_s)} |"
        )
    lines += [
        "",
        f"Steady state per actor process ({PER_ACTOR} agents each), over "
        f"{WINDOW:g} s after convergence:",
        "",
        "| N | actor processes | CPU % of one core, mean / max | RSS MiB, mean / max | "
        "whole machine CPU % (all cores) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.cpu:
            lines.append(
                f"| {r.n} | {len(r.cpu)} | {statistics.fmean(r.cpu):.0f} / {max(r.cpu):.0f} | "
                f"{statistics.fmean(r.rss):.0f} / {max(r.rss):.0f} | {r.machine_cpu:.0f} |"
            )
    lines += [
        "",
        "How to read it:",
        "",
        "- Every agent's view is read by its own actor in-process (no sampling: all agents, "
        f"every poll); median poll period {statistics.median(polls or [0.0]) * 1000:.0f} ms.",
        "- A crash closes one agent's sockets without a leave; the agents sharing its actor "
        "process keep running. Victims are in different actors across repeats.",
        "- \"leave\" includes the leaving agent's 1 s `leave_linger` (the launcher's `leave()` "
        "returns after it).",
        "- All agents share this machine's cores with Ray's own processes and the polling, so "
        "large N measures a saturated machine as much as the protocol.",
    ]
    errors = [e for r in results for e in r.errors]
    if errors:
        lines += ["", "Problems during the run:", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def run(
    sizes: Sequence[int] = (100, 200), *, crash_repeats: int = CRASH_REPEATS,
    window: float = WINDOW, progress: Callable[[str], None] | None = _stderr,
) -> str:  # fmt: skip
    """Measure every size in turn (Ray started once); return the markdown section."""
    import ray

    say = progress or (lambda _m: None)
    machine = describe(with_load=True)
    t0 = time.monotonic()
    started = False
    if not ray.is_initialized():
        say(f"starting Ray (num_cpus={os.cpu_count()})")
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)  # fmt: skip
        started = True
    try:
        results = [_measure(n, say, crash_repeats, window) for n in sizes]
    finally:
        if started:
            ray.shutdown()
    elapsed = time.monotonic() - t0
    say(f"done in {elapsed:.0f} s")
    return report(results, machine, elapsed)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scenarios.bench.ray_agents",
        description="Benchmark many agents launched with Ray; print a markdown section.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 200], metavar="N",
                   help="cluster sizes to measure (default 100 200)")  # fmt: skip
    p.add_argument("--crash-repeats", type=int, default=CRASH_REPEATS, metavar="K",
                   help=f"agents crashed per size (default {CRASH_REPEATS})")  # fmt: skip
    p.add_argument("--window", type=float, default=WINDOW, metavar="S",
                   help=f"steady-state sampling window (default {WINDOW:g} s)")  # fmt: skip
    a = p.parse_args(argv)
    if any(n < 2 * PER_ACTOR for n in a.sizes) or a.crash_repeats < 1 or a.window <= 0:
        p.error(f"every size must be >= {2 * PER_ACTOR}, --crash-repeats >= 1, --window > 0")
    print(run(a.sizes, crash_repeats=a.crash_repeats, window=a.window), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
