"""`agora scenario list | validate | run | compare | cleanup`.

`run` exits 0 when the run completed and every checker passed, 3 when it completed but a
checker found problems (the report lists them), 130 when interrupted (a partial report is
written), 1 on bad input (one line naming file, line and key).

Heavy imports (the simulator, the forecaster, matplotlib) happen inside the commands, so the
rest of the CLI, and agents, start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).resolve().parent / "shipped"
PROG = "agora"
CHECKS_FAILED = 3  # exit code of `run` when the run completed but a checker found problems


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


def resolve(name: str) -> Path:
    """A scenario file path, or the name of a shipped scenario."""
    p = Path(name)
    if p.suffix == ".toml" or p.exists() or "/" in name:
        return p
    found = shipped().get(name)
    if found is None:
        from scenarios.spec import ScenarioError

        raise ScenarioError(f"{name}: no such file, and no shipped scenario of that name "
                            f"(shipped: {', '.join(shipped())})")  # fmt: skip
    return found


def _fail(msg: str, code: int = 1) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


def _errors() -> tuple[type[BaseException], ...]:
    from metalearn.errors import DataError
    from scenarios.netns import NetnsError
    from scenarios.report import ReportError
    from scenarios.spec import ScenarioError

    return ScenarioError, DataError, NetnsError, ReportError, OSError


def cmd_list(_args: argparse.Namespace) -> int:
    from scenarios import spec

    rows = []
    for name, path in shipped().items():
        try:
            sc = spec.load(path)
            rows.append((name, sc.mode, f"{sc.cluster.nodes}", f"{sc.duration:g} s",
                         sc.description))  # fmt: skip
        except spec.ScenarioError as e:
            rows.append((name, "?", "?", "?", f"INVALID: {e}"))
    w = [max(len(r[i]) for r in [("NAME", "MODE", "NODES", "DURATION", ""), *rows])
         for i in range(4)]  # fmt: skip
    print(f"{'NAME':<{w[0]}}  {'MODE':<{w[1]}}  {'NODES':>{w[2]}}  {'DURATION':>{w[3]}}  "
          "DESCRIPTION")  # fmt: skip
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  {r[4]}")
    print(f"\n({len(rows)} scenarios in {SHIPPED}; run one with: agora scenario run NAME)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from scenarios import spec

    bad = 0
    for name in args.files:
        try:
            sc = spec.load(resolve(name))
            if args.mode == "local":
                from scenarios import run_local

                run_local.plan(sc)
        except _errors() as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            bad += 1
            continue
        print(f"ok: {sc.source}: {sc.name}, {sc.cluster.nodes} nodes, {sc.duration:g} s, "
              f"{len(sc.faults)} faults, policies {', '.join(sc.policies)}, "
              f"seeds {', '.join(map(str, sc.seeds))}")  # fmt: skip
    return 1 if bad else 0


def _policies(text: str) -> tuple[str, ...]:
    from scenarios.policies import OMNISCIENT, POLICIES

    out = tuple(p.strip() for p in text.split(",") if p.strip())
    known = (*POLICIES, OMNISCIENT)
    for p in out:
        if p not in known:
            raise argparse.ArgumentTypeError(f"unknown policy {p!r} (known: {', '.join(known)})")
    if not out:
        raise argparse.ArgumentTypeError("give at least one policy")
    return out


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"a seed is between 0 and 2^63-1, got {v}")
    return v


def cmd_run(args: argparse.Namespace) -> int:
    from scenarios import report, runner, spec

    try:
        sc = spec.load(resolve(args.scenario))
        mode = args.mode or sc.mode
        out = Path(args.out) if args.out else Path("results") / f"{sc.name}-{mode}"
        local = {"network": args.network, "workdir": out / "agents" if args.keep_logs else None}
        path = runner.run(sc, mode, out, seeds=tuple(args.seed) if args.seed else None,
                          policies=args.policies, progress=not args.no_progress,
                          local_options=local)  # fmt: skip
        headline = report.headline_table(out)
        info = json.loads((out / "run.json").read_text())
        checks = json.loads((out / "metrics.json").read_text())["checks"]
    except _errors() as e:
        return _fail(str(e))
    print(f"\n{headline}\n\nreport: {path}")
    if not info.get("complete", False):
        print(f"{PROG}: the run was interrupted: the report is marked INCOMPLETE",
              file=sys.stderr)  # fmt: skip
        return 130
    failed = {p: k for p, found in checks.items() for k, v in found.items() if v}
    if failed:
        print(f"{PROG}: checks failed: " + ", ".join(f"{p}: {k}" for p, k in failed.items()),
              file=sys.stderr)  # fmt: skip
        return CHECKS_FAILED
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from scenarios import report

    try:
        print(report.compare(args.folders))
    except _errors() as e:
        return _fail(str(e))
    return 0


def cmd_cleanup(_args: argparse.Namespace) -> int:
    from scenarios import run_local

    removed = run_local.cleanup_leftovers()
    print("removed: " + ", ".join(removed) if removed else "nothing left behind by earlier runs")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("scenario", help="run multi-node scenarios and failure-injection "
                       "experiments (simulator or real agents)",
                       description="Scenarios: one TOML file describes a cluster, its workload "
                       "and its faults; see docs/scenarios.md.")  # fmt: skip
    s = p.add_subparsers(dest="scenario_command", metavar="SUBCOMMAND",
                         parser_class=type(p))  # fmt: skip
    s.required = True
    q = s.add_parser("list", help="the shipped scenarios, one line each")
    q.set_defaults(func=cmd_list)
    q = s.add_parser("validate", help="check scenario files (errors name file, line and key)")
    q.add_argument("files", nargs="+", metavar="FILE", help="scenario files or shipped names")
    q.add_argument("--mode", choices=("sim", "local"),
                   help="also check that a local run fits this machine")  # fmt: skip
    q.set_defaults(func=cmd_validate)
    q = s.add_parser("run", help="play a scenario and write a report with plots")
    q.add_argument("scenario", metavar="FILE", help="a scenario file or a shipped name")
    q.add_argument("--mode", choices=("sim", "local"),
                   help="sim: the deterministic simulator; local: real agents on this machine "
                   "(default: the file's mode)")  # fmt: skip
    q.add_argument("--seed", type=_seed, action="append", metavar="N",
                   help="run this seed (repeatable; default: the file's seeds)")  # fmt: skip
    q.add_argument("--policies", type=_policies, metavar="A,B",
                   help="policies to compare (default: the file's)")  # fmt: skip
    q.add_argument("--out", metavar="DIR",
                   help="results folder (default: results/<name>-<mode>)")  # fmt: skip
    q.add_argument("--network", choices=("auto", "namespaces", "loopback"), default="auto",
                   help="local mode: one network namespace per agent (needs root, ip and nft) "
                   "or loopback (default: namespaces when possible)")  # fmt: skip
    q.add_argument("--keep-logs", action="store_true",
                   help="local mode: keep each agent's config, log and event log in DIR/agents")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_run)
    q = s.add_parser("compare", help="side-by-side table of several results folders")
    q.add_argument("folders", nargs="+", metavar="DIR")
    q.set_defaults(func=cmd_compare)
    q = s.add_parser("cleanup", help="remove agents and namespaces left by a killed run")
    q.set_defaults(func=cmd_cleanup)
    logging.getLogger("scenarios").setLevel(logging.INFO)
