"""Latency of the runtime path an agent uses: adapt on a node's history + one forecast.

``run()`` returns a dict of figures; ``python -m metalearn.bench`` prints them.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from metalearn.data import load_dir
from metalearn.runtime import Forecaster


def run(
    data: str | Path,
    model: str | Path | None = None,
    nodes: int = 200,
    shots: int | None = None,
    threads: int = 1,
) -> dict[str, float | int | str]:
    """Time ``adapt(history)`` + ``forecast(window)`` for ``nodes`` machines of ``data``.

    All nodes share one loaded meta-initialization (as in an agent process hosting many
    nodes); each adapts on the start of one real machine's trace.
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t = time.perf_counter()
        fc = Forecaster.load(model)
        load_ms = (time.perf_counter() - t) * 1e3
        k = fc.shots if shots is None else shots
        n = fc.min_history(max(k, 1))
        hists = [s.values[:n] for s in load_dir(data, min_length=n)[:nodes]]
        for h in hists[:10]:  # warm-up
            fc.adapt(h, shots=k).forecast(h[-fc.window:])
        total, adapt_only, fc_only = [], [], []
        adapted = []
        for h in hists:
            t0 = time.perf_counter()
            node = fc.adapt(h, shots=k)
            t1 = time.perf_counter()
            node.forecast(h[-fc.window:])
            t2 = time.perf_counter()
            total.append((t2 - t0) * 1e3)
            adapt_only.append((t1 - t0) * 1e3)
            fc_only.append((t2 - t1) * 1e3)
            adapted.append(node)
        q = statistics.quantiles(total, n=10)
        return {
            "adapt_forecast_median_ms": round(statistics.median(total), 3),
            "adapt_forecast_p90_ms": round(q[-1], 3),
            "adapt_median_ms": round(statistics.median(adapt_only), 3),
            "forecast_median_ms": round(statistics.median(fc_only), 3),
            "checkpoint_load_ms": round(load_ms, 1),
            "nodes": len(hists),
            "shots": k,
            "inner_steps": fc.inner_steps,
            "torch_threads": threads,
            "cpus": os.cpu_count() or 0,
            "params_per_node": sum(p.numel() for p in adapted[0].params),
        }
    finally:
        torch.set_num_threads(prev_threads)


if __name__ == "__main__":
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/gcd-vms"), indent=2))
