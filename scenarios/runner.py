"""Play a scenario in one mode for each of its policies and seeds, then write the results folder
and its report.

Ctrl-C or SIGTERM stops the run in progress at its next step (local mode: every agent stopped,
every namespace and rule removed), and a partial report marked INCOMPLETE is written from what
was observed so far.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scenarios import report, results
from scenarios.observation import Observation
from scenarios.policies import OMNISCIENT
from scenarios.spec import Scenario, ScenarioError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """`git describe` of the checkout the code runs from, or the package version."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)  # fmt: skip
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"agora {version('agora')}"
    except PackageNotFoundError:
        return "unknown"


class Stop:
    """Set by SIGINT/SIGTERM while a run is in progress; runners poll it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def handler(signum: int, _frame: Any) -> None:
            if self.signal is None:
                log.warning("stopping (%s): cleaning up, writing a partial report",
                            signal.Signals(signum).name)  # fmt: skip
            self.signal = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class _Bar:
    """A progress bar per run: scenario time, tasks finished, faults applied."""

    def __init__(self, label: str, total: float, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=round(total, 1), desc=label, unit="s", leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                            "{postfix} [{elapsed}]", file=sys.stderr,
                            mininterval=0.2 if sys.stderr.isatty() else 5.0)  # fmt: skip

    def __call__(self, t: float, finished: int, faults: int) -> None:
        if self.bar is not None:
            self.bar.n = round(min(t, self.bar.total), 1)
            self.bar.set_postfix_str(f"tasks finished {finished}, faults {faults}",
                                     refresh=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(sc: Scenario, mode: str, out: Path, *, seeds: tuple[int, ...] | None = None,
        policies: tuple[str, ...] | None = None, progress: bool = True,
        local_options: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Run the scenario and write `out`; returns the report's path."""
    seeds = seeds or sc.seeds
    policies = policies or sc.policies
    if mode == "local" and OMNISCIENT in policies:
        if len(policies) == 1:
            raise ScenarioError(f"{sc.source}: the omniscient baseline runs in sim mode only")
        policies = tuple(p for p in policies if p != OMNISCIENT)
        log.warning("omniscient is a simulator-only baseline: left out of this local run")
    if mode == "local":
        from scenarios import run_local

        plan = run_local.plan(sc, **(local_options or {}))  # refuses before anything starts
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    stop = Stop()
    observations: list[Observation] = []
    mechanisms: dict[str, str] = {}
    with stop.installed():
        for seed in seeds:
            for policy in policies:
                if stop():
                    break
                bar = _Bar(f"{sc.name} {policy} seed {seed} ({mode})", sc.duration, progress)
                try:
                    if policy == OMNISCIENT:
                        from scenarios import omniscient

                        obs = omniscient.run(sc, seed, bar, stop)
                    elif mode == "sim":
                        from scenarios import run_sim

                        obs = run_sim.run(sc, policy, seed, bar, stop)
                    else:
                        obs = run_local.run(plan, policy, seed, bar, stop)
                finally:
                    bar.close()
                observations.append(obs)
                for f in obs.faults:
                    mechanisms.setdefault(f.event.action, f.mechanism)
    info = {
        "scenario": sc.name, "description": sc.description, "mode": mode, "seeds": list(seeds),
        "policies": list(policies), "code_version": code_version(),
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - t0, 3), "complete": not stop(),
        "fault_mechanisms": mechanisms, "nodes": sc.cluster.nodes, "duration": sc.duration,
        "source": sc.source,
    }  # fmt: skip
    if mode == "local":
        info["network"] = plan.network_kind
    results.write(out, info, sc.text, observations, sc.sample_interval)
    return report.write_report(out)
