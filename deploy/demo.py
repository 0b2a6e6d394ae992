"""`make demo`: the shipped `demo` scenario with real agents on this machine, in about a minute.

Six `agora agent` processes (each in its own network namespace when run as root, else on
loopback) converge, place a steady stream of short tasks, lose one node to SIGKILL (it restarts
5 s later with the same id and address) and are split 2 | 4 by a partition that heals. The run
ends by printing the report's path and its headline table; the report folder (default
results/demo) has the plots, the tasks and every fault and membership event. It exits 0 when
the run completed, also when the checkers found problems in agora itself: finding them is what
the demo shows (they are printed, and listed in the report).

The same as ``agora scenario run demo --mode local --out results/demo``.
"""

from __future__ import annotations

import argparse
import sys

from scenarios.cli import CHECKS_FAILED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    p.add_argument("--network", choices=("auto", "namespaces", "loopback"), default="auto",
                   help="one network namespace per agent (root) or loopback (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    run = ["scenario", "run", "demo", "--mode", "local", "--out", args.out,
           "--network", args.network]  # fmt: skip
    if args.no_progress:
        run.append("--no-progress")
    from deploy.cli import main as agora

    try:
        code = agora(run)
    except KeyboardInterrupt:
        return 130
    if code == CHECKS_FAILED:  # the demo did its job: the report says what the checkers found
        print("demo: the run completed; the checkers found problems in the system under test "
              f"(listed in {args.out}/report.md, 'Checks')")
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
