"""`make bench`: run every benchmark and write docs/benchmarks.md (command, machine, date).

    python -m scenarios.bench --out docs/benchmarks.md [--only sim,real,placement,...] [--quick]

Targets are reported next to the measured figures, met or not; nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import traceback
from collections.abc import Callable

from scenarios.bench.machine import describe

SECTIONS = ("sim", "real", "placement", "policies", "scenarios", "ray", "forecast", "lossy",
            "vs-ray", "idle-vs-memberlist")  # fmt: skip


def _sim(quick: bool) -> str:
    from scenarios.bench import sim as bench_sim

    return bench_sim.run((100, 1000) if quick else (100, 1000, 5000))


def _real(quick: bool) -> str:
    from scenarios.bench import real as bench_real

    return bench_real.run((10,) if quick else (20, 50))


def _ray(quick: bool) -> str:
    from scenarios.bench import ray_agents as bench_ray

    return bench_ray.run((40,) if quick else (100, 200))


SHARED = os.environ.get("AGORA_SHARED_DATA", "../shared/data")  # holds gcd-vms, bitbrains-rnd
DATA_SETS = [os.path.join(SHARED, "gcd-vms"), os.path.join(SHARED, "bitbrains-rnd")]


def _forecast(quick: bool) -> str:
    """Meta-training wall time, adapt+forecast latency, and the held-out evaluation."""
    import subprocess
    import tempfile
    import time

    from metalearn import bench as forecast_bench

    agora = os.path.join(os.path.dirname(sys.executable), "agora")
    data = [a for d in DATA_SETS for a in ("--data", d)]
    lines = ["### Forecaster", ""]
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "peak_forecaster.npz")
        cmd = [agora, "forecast", "train", *data, "--out", model, "--seed", "0"]
        if quick:
            cmd += ["--epochs", "3"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        train_s = time.perf_counter() - t
        report = os.path.join(tmp, "eval.md")
        t = time.perf_counter()
        subprocess.run([agora, "forecast", "evaluate", *data, "--model", model,
                        *(["--limit", "40"] if quick else []), "--report", report],
                       check=True, capture_output=True)  # fmt: skip
        eval_s = time.perf_counter() - t
        with open(report) as f:
            tables = f.read().strip()
        lat = forecast_bench.run(DATA_SETS[1], model)
    lines += [
        f"Meta-training (`agora forecast train {' '.join(data)} --seed 0"
        f"{' --epochs 3' if quick else ''}`, whole command incl. data loading, the joint "
        f"baseline and calibration): **{train_s:.0f} s** wall (target < 600 s).",
        "",
        f"Adapt (k={lat['shots']}, {lat['inner_steps']} steps) + one forecast for one node, "
        f"{lat['nodes']} real machines ({lat['history']} steps of history each) sharing one "
        f"loaded forecaster, numpy: median **{lat['adapt_forecast_median_ms']} ms**, p90 "
        f"{lat['adapt_forecast_p90_ms']} ms (target < 5 ms); forecast alone "
        f"{lat['forecast_median_ms']} ms; file load {lat['load_ms']} ms.",
        "",
        f"Held-out evaluation of that file ({eval_s:.0f} s wall; docs/forecasting.md describes "
        "the protocol):",
        "",
        tables,
        "",
    ]
    return "\n".join(lines)


def _placement(quick: bool) -> str:
    """Task placement latency and throughput between real agent processes, with direct awards
    and with every task negotiating."""
    from scenarios.bench import placement_real as bench_placement_real

    sizes = (10 if quick else 20, 100 if quick else 300, 500 if quick else 2000)
    return "\n".join(bench_placement_real.run(*sizes, bid_rounds=b) for b in (False, True))


def _policies(quick: bool) -> str:
    """Placement policies on the simulator under replayed background load."""
    from scenarios.bench import policies as bench_policies

    return bench_policies.section(
        quick=quick, command=f"python -m scenarios.bench.policies{' --quick' if quick else ''}"
    )


def _scenarios(quick: bool) -> str:
    """Shipped scenarios against their targets (sim and local mode side by side)."""
    from scenarios.bench import scenarios as bench_scenarios

    only = ("steady", "churn") if quick else bench_scenarios.SECTIONS
    return bench_scenarios.section(only)


def _lossy(quick: bool) -> str:
    """agora's membership beside memberlist on one lossy, partitioned namespaced network."""
    from scenarios.bench import lossy as bench_lossy

    return bench_lossy.run(quick)


def _vs_ray(quick: bool) -> str:
    """agora beside Ray for the same burst of tasks, alternating on this machine."""
    from scenarios.bench import vs_ray as bench_vs_ray

    if quick:
        return bench_vs_ray.run(agents=5, n_burst=300, n_latency=30, rounds=1)
    return bench_vs_ray.run()


def _idle_vs_memberlist(quick: bool) -> str:
    """The idle cost of membership per node, agora beside memberlist, one after the other."""
    from scenarios.bench import idle_membership as bench_idle

    if quick:
        return bench_idle.run(n=10, warmup=10.0, window=10.0)
    return bench_idle.run()


RUNNERS: dict[str, Callable[[bool], str]] = {
    "scenarios": _scenarios,
    "sim": _sim,
    "real": _real,
    "placement": _placement,
    "ray": _ray,
    "forecast": _forecast,
    "policies": _policies,
    "lossy": _lossy,
    "vs-ray": _vs_ray,
    "idle-vs-memberlist": _idle_vs_memberlist,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown file to write")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        print(f"bench: error: unknown section(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    given = argv if argv is not None else sys.argv[1:]
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Command: `python -m scenarios.bench {' '.join(given)}` (`make bench`)  ",
        f"Machine: {platform.node()}: {describe()}  ",
        f"Date: {started}",
        "",
    ]
    failed = False
    for name in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            parts.append(RUNNERS[name](args.quick))
        except Exception:  # a broken section is reported in the file, and the run fails
            failed = True
            parts.append(f"### {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}```\n")
    text = "\n".join(parts)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
