"""The `agora` command line.

    agora agent   [--config FILE] [--bind EP] [--advertise EP] [--join EP ...] ...
    agora members --agent EP [--stats] [--json] [--timeout S]
    agora label   --agent EP KEY=VALUE [KEY=VALUE ...]
    agora ray-cluster --agents N [--per-actor K] [--duration S] [--config FILE]
    agora forecast ...            (when the forecaster package provides it)

Every user error prints one line ``agora: error: ...`` on stderr and exits non-zero (2 for
usage errors, 1 for everything else); no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from agent.resources import format_size
from deploy.client import ClientError, query
from deploy.config import DEFAULT_BIND, LOG_LEVELS, ConfigError, apply_overrides, load_config

PROG = "agora"


class UserError(Exception):
    """Anything the user can fix; printed as one line."""


def fail(msg: str, code: int = 1) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


# ---------------------------------------------------------------- agent


def _labels(values: list[str] | None, what: str = "--label") -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} expects KEY=VALUE, got {v!r}")
        out[key.strip()] = val
    return out


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.agent import AgentError, run_agent
    from gossip.transport import BindError

    try:
        cfg = load_config(args.config)
        cfg = apply_overrides(
            cfg, node_id=args.node_id, bind=args.bind, advertise=args.advertise,
            join=args.join, join_timeout=args.join_timeout, load_interval=args.load_interval,
            log_level=args.log_level, cpus=args.cpus, memory=args.memory, gpus=args.gpus,
            labels=_labels(args.label),
        )  # fmt: skip
        options = cfg.to_options()
    except (ConfigError, UserError) as e:
        return fail(str(e))
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s %(levelname)s [{options.node_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(run_agent(options))
    except (BindError, AgentError) as e:
        return fail(str(e))
    except KeyboardInterrupt:  # a second Ctrl-C during the leave linger
        return 130
    return 0


def add_agent_parser(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run this machine's agent",
        description="Run an agent: bind one ZeroMQ endpoint, join the cluster through the seeds "
        "and gossip membership and resources until SIGTERM/SIGINT (then leave gracefully). "
        "Command-line values override the config file.",
    )
    p.add_argument("--config", "-c", metavar="FILE", help="TOML config file (see deploy/config.py)")
    p.add_argument("--bind", metavar="EP", help=f"endpoint to listen on (default {DEFAULT_BIND})")
    p.add_argument(
        "--advertise", metavar="EP",
        help="endpoint peers use to reach this agent (default: --bind with 0.0.0.0 replaced by "
        "127.0.0.1; set it when the cluster spans machines)",
    )  # fmt: skip
    p.add_argument(
        "--join", "-j", metavar="EP", action="append",
        help="seed agent to join through; repeat or give a comma-separated list "
        "(none: start a new cluster)",
    )  # fmt: skip
    p.add_argument("--node-id", metavar="ID", help="this node's id (default HOSTNAME-PORT)")
    p.add_argument("--join-timeout", type=float, metavar="S",
                   help="give up if no seed answers within S seconds (default 10)")  # fmt: skip
    p.add_argument("--load-interval", type=float, metavar="S",
                   help="seconds between load samples (default 1)")  # fmt: skip
    p.add_argument("--log-level", metavar="LEVEL", type=str.upper, choices=LOG_LEVELS,
                   help="DEBUG, INFO (default), WARNING or ERROR")  # fmt: skip
    p.add_argument("--cpus", type=float, help="CPUs offered (default: detected)")
    p.add_argument("--memory", metavar="SIZE", help="memory offered, e.g. 8GiB (default: detected)")
    p.add_argument("--gpus", type=int, help="GPUs offered (default: /dev/nvidiaN count)")
    p.add_argument("--label", metavar="KEY=VALUE", action="append",
                   help="a label to publish (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_agent)


# ---------------------------------------------------------------- members


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def _resources(row: dict[str, Any]) -> str:
    if row.get("cpus") is None:
        return "-"
    s = f"{row['cpus']:g} cpu, {format_size(int(row['memory'] or 0))}"
    if row.get("gpus"):
        s += f", {row['gpus']} gpu"
    if row.get("labels"):
        s += " " + ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items()))
    return s


def format_members(rows: list[dict[str, Any]]) -> str:
    """The members table as text (one header line, one line per member)."""
    header = ("NODE", "ADDRESS", "STATUS", "INC", "RESOURCES", "LOAD", "MEM", "LAST HEARD")
    lines = [header]
    for r in rows:
        heard = r.get("last_heard_s_ago")
        lines.append((
            str(r.get("node")), str(r.get("addr")), str(r.get("status")),
            _fmt(r.get("incarnation")), _resources(r),
            "-" if r.get("load") is None else f"{100 * r['load']:.0f}%",
            "-" if r.get("mem_load") is None else f"{100 * r['mem_load']:.0f}%",
            "-" if heard is None else f"{heard:.1f}s ago",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def format_stats(stats: dict[str, Any]) -> str:
    out: list[str] = []
    for section, value in stats.items():
        if isinstance(value, dict):
            out.append(f"{section}:")
            out += [f"  {k}: {v}" for k, v in sorted(value.items())] or ["  (none)"]
        else:
            out.append(f"{section}: {value}")
    return "\n".join(out)


def cmd_members(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        return fail("--timeout must be positive", 2)
    what = "stats" if args.stats else "members"
    try:
        data = query(args.agent, what, timeout=args.timeout)
    except ClientError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif args.stats:
        print(format_stats(data))
    else:
        print(format_members(data))
    return 0


def _client_options(p: argparse.ArgumentParser, verb: str) -> None:
    """--agent, --json and --timeout, shared by the commands that talk to a running agent."""
    p.add_argument("--agent", "-a", metavar="EP", default="tcp://127.0.0.1:7946",
                   help=f"the agent to {verb} (default tcp://127.0.0.1:7946)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="give up after S seconds without an answer (default 2)")  # fmt: skip


def add_members_parser(sub: Any) -> None:
    p = sub.add_parser(
        "members",
        help="show the membership table as one agent sees it",
        description="Ask a running agent for its view of the cluster: node id, address, status "
        "(alive/suspect/failed/left), incarnation, resources, load and when it last heard from "
        "each member.",
    )
    _client_options(p, "ask")
    p.add_argument("--stats", action="store_true",
                   help="show the agent's protocol and transport counters instead")  # fmt: skip
    p.set_defaults(func=cmd_members)


# ---------------------------------------------------------------- label


def cmd_label(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        return fail("--timeout must be positive", 2)
    try:
        labels = _labels(args.labels, "label")
    except UserError as e:
        return fail(str(e), 2)
    assert labels  # argparse requires at least one
    try:
        data = query(args.agent, "set_labels", timeout=args.timeout, args={"labels": labels})
    except ClientError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        shown = ",".join(f"{k}={v}" for k, v in sorted(data.get("labels", {}).items()))
        print(f"{data.get('node')}: labels {shown} (record version {data.get('version')})")
    return 0


def add_label_parser(sub: Any) -> None:
    p = sub.add_parser(
        "label",
        help="set labels on a running agent (gossiped to the whole cluster)",
        description="Merge KEY=VALUE labels into a running agent's published resources: a key "
        "already set gets the new value, other labels are kept. The change is gossiped like any "
        "resource update; it lasts until the agent stops (put permanent labels in the config "
        "file's [resources] labels or pass --label to 'agora agent').",
    )
    p.add_argument("labels", metavar="KEY=VALUE", nargs="+", help="a label to set (repeatable)")
    _client_options(p, "label")
    p.set_defaults(func=cmd_label)


# ---------------------------------------------------------------- ray-cluster


def cmd_ray_cluster(args: argparse.Namespace) -> int:
    if args.agents < 1:
        return fail("--agents must be at least 1", 2)
    if args.per_actor < 1:
        return fail("--per-actor must be at least 1", 2)
    if args.duration is not None and args.duration <= 0:
        return fail("--duration must be positive", 2)
    if args.timeout <= 0:
        return fail("--timeout must be positive", 2)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return fail(str(e))
    try:
        from deploy.ray_launcher import LaunchError, RayCluster  # imports ray only here
    except ImportError as e:
        return fail(f"Ray is not installed ({e}); pip install 'agora[scale]'")

    def progress(msg: str) -> None:
        print(f"[ray-cluster] {msg}", file=sys.stderr, flush=True)

    try:
        cluster = RayCluster(
            args.agents, args.per_actor, cfg.swim, args.base_port, host=args.host,
            load_interval=cfg.load_interval, join_timeout=max(cfg.join_timeout, args.timeout),
            start_timeout=args.timeout,
        )  # fmt: skip
    except ValueError as e:
        return fail(str(e), 2)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    old_handlers: dict[int, Any] = {}
    started = False
    try:
        progress(f"starting {args.agents} agents in {cluster.n_actors} Ray actor(s), "
                 f"{args.per_actor} per actor")  # fmt: skip
        t0 = time.monotonic()
        try:
            cluster.start()
        except (LaunchError, OSError, ValueError) as e:
            return fail(str(e).splitlines()[0])
        except Exception as e:  # a Ray error wraps the actor's exception in many lines
            return fail(f"cannot start the cluster: {str(e).strip().splitlines()[-1]}")
        started = True
        # after ray.init, whose own SIGTERM handler would end the driver at once: SIGTERM and
        # SIGINT (even if inherited as ignored, e.g. from a background shell) stop the cluster
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, signal.default_int_handler)
        progress(f"all {args.agents} agents bound and joined after {time.monotonic() - t0:.1f} s "
                 "(Ray start included)")  # fmt: skip
        for i, (node, addr) in enumerate(zip(cluster.node_ids, cluster.addrs, strict=True)):
            k = i // args.per_actor
            print(f"{node}  {addr}  (actor {k}, pid {cluster.pids[k]})", flush=True)
        try:
            cluster.wait_converged(timeout=args.timeout)
            print(f"converged: all {args.agents} agents see {args.agents} alive "
                  f"{time.monotonic() - t0:.1f} s after the launch", flush=True)  # fmt: skip
        except TimeoutError as e:
            print(f"NOT converged after {args.timeout:g} s: {str(e).split('; ', 1)[-1]}",
                  flush=True)  # fmt: skip
        if args.duration is None:
            progress("running until Ctrl-C")
            while True:
                time.sleep(3600)
        progress(f"running for {args.duration:g} s (Ctrl-C to stop earlier)")
        time.sleep(args.duration)
    except KeyboardInterrupt:
        progress("interrupted")
    finally:
        try:
            if started:
                progress("stopping: every agent leaves, then the actors end")
                cluster.stop(graceful=True)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    if not started:  # interrupted while starting
        return 130
    print(f"stopped: {args.agents} agents, {cluster.n_actors} actor(s)", flush=True)
    return 0


def add_ray_cluster_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ray-cluster",
        help="launch many agents on this machine (or Ray cluster) with Ray, for scale tests",
        description="Start N agents in ceil(N/K) Ray actors (K agents share one process and "
        "event loop, each with its own port), agent 0 first and the others joining through it; "
        "print each agent's address and whether they converged, run until Ctrl-C/SIGTERM or "
        "--duration, then let every agent leave and end the actors.",
    )
    p.add_argument("--agents", "-n", type=int, required=True, metavar="N",
                   help="number of agents to start (at least 1)")  # fmt: skip
    p.add_argument("--per-actor", "-k", type=int, default=25, metavar="K",
                   help="agents hosted by one Ray actor process (default 25)")  # fmt: skip
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--config", "-c", metavar="FILE",
                   help="agent config file (node.toml format); its [swim] table, load_interval "
                   "and join_timeout apply to every agent, other keys are ignored")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", metavar="HOST",
                   help="address the agents bind, on a port each picked by ZeroMQ "
                   "(default 127.0.0.1; 0.0.0.0 advertises the Ray node's IP)")  # fmt: skip
    p.add_argument("--base-port", type=int, metavar="PORT",
                   help="bind agent i to PORT+i instead of a random free port")  # fmt: skip
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait to start and to converge (default 60)")  # fmt: skip
    p.set_defaults(func=cmd_ray_cluster)


# ---------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump: "agora: error: ..."
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


PLUGIN_COMMANDS = ("forecast",)


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The parser; `plugins=False` skips optional subcommands whose import is heavy (torch)."""
    parser = _Parser(
        prog=PROG,
        description="agora: autonomous orchestration agents that gossip over ZeroMQ.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_agent_parser(sub)
    add_members_parser(sub)
    add_label_parser(sub)
    add_ray_cluster_parser(sub)
    if plugins:
        _register_forecast(sub)
    return parser


def _register_forecast(sub: Any) -> None:
    try:
        from metalearn import cli as forecast_cli  # optional: the forecaster's subcommand
    except Exception as e:  # not there, or torch missing: the rest of the CLI still works
        logging.getLogger(__name__).debug("forecast subcommand unavailable: %r", e)
        return
    try:
        forecast_cli.register(sub)
    except Exception as e:  # pragma: no cover - a bug in the optional plugin
        logging.getLogger(__name__).debug("forecast subcommand unavailable: %r", e)


def _needs_plugins(argv: Sequence[str]) -> bool:
    """Only load plugin subcommands when they may be used or listed (agents start fast)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first is None or first in PLUGIN_COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(plugins=_needs_plugins(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `agora members | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
