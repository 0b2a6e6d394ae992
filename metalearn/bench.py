"""Latency of what an agent runs: adapt the peak forecaster on a node's history + one forecast.

``run()`` returns a dict of figures; ``python -m metalearn.bench [DATA_DIR]`` prints them.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from metalearn.data import load_dir
from metalearn.peak_runtime import PeakForecaster

HISTORY = 672  # what an agent keeps (PlacementConfig.forecast_history)


def run(data: str | Path, model: str | Path | None = None, nodes: int = 200
        ) -> dict[str, float | int | str]:
    """Time ``adapt(history)`` + ``forecast(history)`` for ``nodes`` machines of ``data``,
    each on the first :data:`HISTORY` steps of one real machine's trace, all sharing one
    loaded forecaster (as in an agent process hosting many nodes)."""
    t = time.perf_counter()
    fc = PeakForecaster.load(model)
    load_ms = (time.perf_counter() - t) * 1e3
    hists = [s.values[:HISTORY] for s in load_dir(data, min_length=HISTORY)[:nodes]]
    if not hists:
        hists = [s.values for s in load_dir(data)[:nodes]]  # shorter series: all they hold
    for h in hists[:10]:  # warm-up
        fc.adapt(h).forecast(h)
    total, adapt_only, fc_only = [], [], []
    for h in hists:
        t0 = time.perf_counter()
        node = fc.adapt(h)
        t1 = time.perf_counter()
        node.forecast(h)
        t2 = time.perf_counter()
        total.append((t2 - t0) * 1e3)
        adapt_only.append((t1 - t0) * 1e3)
        fc_only.append((t2 - t1) * 1e3)
    q = statistics.quantiles(total, n=10)
    return {
        "adapt_forecast_median_ms": round(statistics.median(total), 3),
        "adapt_forecast_p90_ms": round(q[-1], 3),
        "adapt_median_ms": round(statistics.median(adapt_only), 3),
        "forecast_median_ms": round(statistics.median(fc_only), 3),
        "load_ms": round(load_ms, 1),
        "nodes": len(hists),
        "history": len(hists[0]),
        "shots": fc.shots,
        "inner_steps": fc.inner_steps,
        "cpus": os.cpu_count() or 0,
        "params_per_node": sum(p.size for p in fc.params),
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/bitbrains-rnd"),
                     indent=2))
