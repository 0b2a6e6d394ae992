"""The `agora` command line.

    agora agent   [--config FILE] [--bind EP] [--advertise EP] [--join EP ...] ...
    agora members --agent EP [--stats] [--json] [--timeout S]
    agora label   --agent EP KEY=VALUE [KEY=VALUE ...]
    agora submit  --agent EP [--cpus N] [--mem SIZE] [--gpus N] [--label K=V ...] [--env K=V ...]
                  [--cwd DIR] [--deadline D] [--timeout D] [--expect D] [--id ID] [--wait]
                  -- COMMAND [ARG ...]
    agora status  TASK_ID --agent EP [--json]
    agora tasks   --agent EP [--state STATE] [--limit N] [--json]
    agora logs    TASK_ID --agent EP [--stdout-only | --stderr-only]
    agora cancel  TASK_ID --agent EP
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
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.messages import MAX_LIST_RECORDS
from agent.policies import NAMES as POLICY_NAMES
from agent.resources import format_size
from agent.tasks import MAX_DURATION
from deploy import keys_cli
from deploy.client import ClientError, NoAnswer, QueryRefused, query, use_credential
from deploy.config import (
    DEFAULT_BIND,
    FORECASTERS,
    LOG_LEVELS,
    ConfigError,
    apply_overrides,
    load_config,
)
from deploy.task_args import (
    DEFAULT_CPUS,
    DEFAULT_EXPECTED,
    TASK_STATES,
    TERMINAL_STATES,
    TaskArgError,
    build_spec,
    new_task_id,
    parse_limit,
    parse_state,
    parse_task_id,
    spec_args,
)
from gossip.auth import Credential, KeyFileError, Keyring
from gossip.membership import GEN_SHIFT
from scenarios import cli as scenario_cli

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
            labels=_labels(args.label), forecaster=args.forecaster, policy=args.policy,
            event_log=args.event_log, fault_rules=args.fault_rules,
            cluster_key=args.cluster_key,
        )  # fmt: skip
        options = cfg.to_options()
        if options.cluster_key:
            Keyring.load(options.cluster_key)  # a bad key file: one line now, not at bind
    except (ConfigError, UserError, KeyFileError) as e:
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
    p.add_argument("--policy", choices=POLICY_NAMES,
                   help="placement policy for the tasks this agent owns (default predictive)")
    p.add_argument("--forecaster", choices=FORECASTERS,
                   help="meta (default: the shipped meta-learned peak forecaster, adapted on "
                   "this node), meta-init (unadapted) or last-value (ablations), or none")
    p.add_argument("--cpus", type=float, help="CPUs offered (default: detected)")
    p.add_argument("--memory", metavar="SIZE", help="memory offered, e.g. 8GiB (default: detected)")
    p.add_argument("--gpus", type=int, help="GPUs offered (default: /dev/nvidiaN count)")
    p.add_argument("--label", metavar="KEY=VALUE", action="append",
                   help="a label to publish (repeatable)")  # fmt: skip
    p.add_argument("--event-log", metavar="FILE",
                   help="append a JSON-lines log of this agent's events to FILE, for scenario "
                   "checkers (default: none)")  # fmt: skip
    p.add_argument("--cluster-key", metavar="FILE",
                   help="cluster keyring (agora keys generate): every message authenticated and "
                   "encrypted with CURVE; without it the agent runs plain, for local experiments "
                   "only (see docs/security.md)")  # fmt: skip
    p.add_argument("--fault-rules", metavar="FILE",
                   help="testing only: apply the loss/delay/blocked rules in the JSON FILE "
                   "to outgoing protocol messages, re-read when it changes (default: none)",
                   )  # fmt: skip
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


def _incarnation(inc: Any) -> str:
    """GENERATION.N: the generation changes at every restart of the agent, N when it refutes."""
    if not isinstance(inc, int) or isinstance(inc, bool):
        return _fmt(inc)
    gen, n = inc >> GEN_SHIFT, inc & ((1 << GEN_SHIFT) - 1)
    return f"{gen}.{n}" if gen else str(n)


def format_members(rows: list[dict[str, Any]]) -> str:
    """The members table as text (one header line, one line per member)."""
    header = ("NODE", "ADDRESS", "STATUS", "INC", "RESOURCES", "LOAD", "MEM", "LAST HEARD")
    lines = [header]
    for r in rows:
        heard = r.get("last_heard_s_ago")
        lines.append((
            str(r.get("node")), str(r.get("addr")), str(r.get("status")),
            _incarnation(r.get("incarnation")), _resources(r),
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


MAX_CLIENT_TIMEOUT = 86_400.0  # a day: longer waits are typos, and zmq's poll takes int ms


def seconds_up_to(most: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds in (0, most] (nan, inf and 1e300 used to
    end in tracebacks, some after a request had been sent or a cluster started)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not 0 < v <= most:  # also rejects nan
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds in (0, {most:g}]")
        return v

    return parse


client_timeout = seconds_up_to(MAX_CLIENT_TIMEOUT)


def _client_options(p: argparse.ArgumentParser, verb: str, *, timeout: float = 2.0,
                    timeout_flag: str = "--timeout", json_output: bool = True) -> None:  # fmt: skip
    """--agent, --key, --json and --timeout, shared by the commands that talk to an agent."""
    p.add_argument("--agent", "-a", metavar="EP", default="tcp://127.0.0.1:7946",
                   help=f"the agent to {verb} (default tcp://127.0.0.1:7946)")  # fmt: skip
    p.add_argument("--key", "-k", metavar="FILE", default=os.environ.get("AGORA_KEY") or None,
                   help="client credential (agora keys client) or the cluster key, for a keyed "
                   "cluster (default: $AGORA_KEY)")  # fmt: skip
    if json_output:
        p.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    p.add_argument(timeout_flag, type=client_timeout, default=timeout, metavar="S",
                   help=f"give up after S seconds without an answer (default {timeout:g})",
                   )  # fmt: skip


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


# ---------------------------------------------------------------- tasks

TASK_TIMEOUT = 5.0  # default client timeout of status/tasks/logs/cancel (lookups may widen)
SUBMIT_TIMEOUT = 10.0  # default client timeout of submit (the agent gives up after 5 s)
WAIT_POLL = 0.5  # seconds between status polls of `submit --wait`
WAIT_REFUSALS = 5  # consecutive refused polls `submit --wait` tolerates (a lookup may miss)
COMMAND_WIDTH = 40  # the COMMAND column of `agora tasks`


def _ask(addr: str, what: str, timeout: float, args: dict[str, Any]) -> Any:
    """`query`, with the agent's own error text (e.g. "unknown task id ...") as the message."""
    try:
        return query(addr, what, timeout=timeout, args=args)
    except QueryRefused as e:
        raise UserError(e.error or str(e)) from None
    except ClientError as e:
        raise UserError(str(e)) from None


def fmt_duration(seconds: float | None) -> str:
    """12.3 s, 5m03s, 2h05m, 1d03h."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))  # clocks of different nodes may disagree a little
    if s < 59.95:
        return f"{s:.1f} s"
    n = int(round(s))
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    if n < 86400:
        return f"{n // 3600}h{n % 3600 // 60:02d}m"
    return f"{n // 86400}d{n % 86400 // 3600:02d}h"


def fmt_time(t: float | None) -> str:
    """An epoch timestamp as local time."""
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _command(row: dict[str, Any], width: int | None = None) -> str:
    text = shlex.join(str(a) for a in row.get("argv") or [])
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _node(row: dict[str, Any]) -> str:
    node, addr = row.get("node") or "", row.get("node_addr") or ""
    if not node:
        return "-"
    return f"{node} ({addr})" if addr else node


def _exit_code(row: dict[str, Any]) -> str:
    """Only a run that ended by itself (or was killed for a timeout) has a meaningful one."""
    return _fmt(row.get("exit_code")) if row.get("state") in ("succeeded", "failed") else "-"


def _demand(row: dict[str, Any]) -> str:
    parts = [f"{row.get('cpus') or 0:g} cpu"]
    if row.get("memory"):
        parts.append(format_size(int(row["memory"])))
    if row.get("gpus"):
        parts.append(f"{row['gpus']} gpu")
    s = ", ".join(parts)
    if row.get("labels"):
        s += "; on nodes labelled " + ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items()))
    return s


def _queued(row: dict[str, Any], now: float) -> str:
    submitted, started = row.get("submitted"), row.get("started")
    if not submitted:
        return "-"
    if started:
        return fmt_duration(started - submitted)
    if row.get("state") in TERMINAL_STATES:
        return "never started"
    return f"{fmt_duration(now - submitted)} so far"


def _ran(row: dict[str, Any], now: float) -> str:
    started, finished = row.get("started"), row.get("finished")
    if not started:
        return "-"
    if finished:
        return fmt_duration(finished - started)
    if row.get("state") in TERMINAL_STATES:
        return "-"
    return f"{fmt_duration(now - started)} so far"


def deadline_status(row: dict[str, Any], now: float) -> str | None:
    """Whether the task met its deadline (None when it has none)."""
    limit, submitted = row.get("deadline"), row.get("submitted")
    if not limit or not submitted:
        return None
    due = submitted + limit
    state, finished = row.get("state"), row.get("finished")
    head = f"{fmt_duration(limit)} after submission ({fmt_time(due)})"
    if state == "succeeded" and finished:
        if finished <= due:
            return f"{head}: met, finished {fmt_duration(finished - submitted)} after submission"
        return f"{head}: missed by {fmt_duration(finished - due)}"
    if state in TERMINAL_STATES:
        return f"{head}: not met (task {state})"
    if now <= due:
        return f"{head}: {fmt_duration(due - now)} left"
    return f"{head}: missed, {fmt_duration(now - due)} overdue"


def format_task(row: dict[str, Any], now: float | None = None) -> str:
    """The `agora status` block: one "name  value" line per fact."""
    now = time.time() if now is None else now
    state = str(row.get("state"))
    lines: list[tuple[str, str]] = [
        ("task", str(row.get("id"))),
        ("state", state),
        ("command", _command(row)),
        ("node", _node(row)),
        ("attempt", str(row.get("attempt", 0))),
        ("exit code", _exit_code(row)),
    ]
    if row.get("reason"):
        lines.append(("reason", str(row["reason"])))
    lines.append(("needs", _demand(row)))
    lines += [
        ("submitted", fmt_time(row.get("submitted"))),
        ("placed", fmt_time(row.get("placed"))),
        ("started", fmt_time(row.get("started"))),
        ("finished", fmt_time(row.get("finished"))),
        ("queued", _queued(row, now)),
        ("ran", _ran(row, now)),
    ]
    dl = deadline_status(row, now)
    if dl is not None:
        lines.append(("deadline", dl))
    if row.get("timeout"):
        lines.append(("timeout", fmt_duration(row["timeout"])))
    if row.get("expected"):
        lines.append(("expected", fmt_duration(row["expected"])))
    if row.get("replicas"):
        lines.append(("replicas", ", ".join(str(n) for n in row["replicas"])))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def format_tasks(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """The `agora tasks` table (AGE: since submission; RAN: run time so far or in total)."""
    now = time.time() if now is None else now
    header = ("ID", "STATE", "NODE", "ATTEMPT", "CPUS", "EXIT", "AGE", "RAN", "COMMAND")
    lines = [header]
    for r in rows:
        ran = _ran(r, now).removesuffix(" so far")
        lines.append((
            str(r.get("id")), str(r.get("state")), r.get("node") or "-", _fmt(r.get("attempt")),
            _fmt(r.get("cpus"), "g"), _exit_code(r),
            fmt_duration(now - r["submitted"]) if r.get("submitted") else "-", ran,
            _command(r, COMMAND_WIDTH),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def final_line(row: dict[str, Any]) -> str:
    """One line saying how a terminal task ended (printed by `submit --wait`)."""
    state, tid = row.get("state"), row.get("id")
    where = f" on {row['node']}" if row.get("node") else ""
    ran = _ran(row, time.time())
    took = f", ran {ran}" if ran != "-" else ""
    code = _exit_code(row)
    shown = row.get("reason") and row["reason"] != f"exit code {code}"  # no need to say it twice
    reason = f": {row['reason']}" if shown else ""
    if state in ("succeeded", "failed"):
        return f"{tid} {state}{where} (exit code {code}{took}){reason}"
    return f"{tid} {state}{where}{reason}"


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        spec = build_spec(
            args.command, cpus=args.cpus, mem=args.mem, gpus=args.gpus, labels=args.label,
            env=args.env, cwd=args.cwd, deadline=args.deadline, timeout=args.timeout,
            expect=args.expect,
        )  # fmt: skip
        task_id = new_task_id() if args.id is None else parse_task_id(args.id, "--id")
    except (TaskArgError, UserError) as e:
        return fail(str(e), 2)
    try:  # the id is chosen here, before sending: resubmitting it is harmless
        data = query(args.agent, "submit", timeout=args.request_timeout,
                     args={"id": task_id, "spec": spec_args(spec)})  # fmt: skip
    except NoAnswer as e:
        return fail(f"{e}; task {task_id} may or may not have been accepted: "
                    f"submit again with --id {task_id} to retry")  # fmt: skip
    except QueryRefused as e:
        return fail(e.error or str(e))
    except ClientError as e:
        return fail(str(e))
    data = data if isinstance(data, dict) else {"id": task_id}
    if data.get("existing") and not args.json:
        print(f"task {task_id} already existed (state {data.get('state')}); not submitted again",
              file=sys.stderr)  # fmt: skip
    if not args.wait:
        print(json.dumps(data, indent=2, sort_keys=True) if args.json else task_id)
        return 0
    if not args.json:
        print(task_id, flush=True)
    try:
        row = _wait_for(args.agent, task_id, args.request_timeout)
    except UserError as e:
        return fail(f"{e} (while waiting for task {task_id})")
    except KeyboardInterrupt:
        print(f"\nstopped waiting; task {task_id} keeps going (agora status {task_id})",
              file=sys.stderr)  # fmt: skip
        return 130
    if args.json:
        print(json.dumps(row, indent=2, sort_keys=True))
    else:
        print(final_line(row))
    return 0 if row.get("state") == "succeeded" else 1


def _wait_for(addr: str, task_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``status`` every WAIT_POLL seconds until the task is terminal; its last row."""
    print(f"waiting for task {task_id} (Ctrl-C stops waiting, not the task)", file=sys.stderr)
    last, refused, silent = None, 0, False
    while True:
        try:
            row = query(addr, "status", timeout=timeout, args={"id": task_id})
        except NoAnswer as e:
            if not silent:
                print(f"{PROG}: warning: {e}; still trying", file=sys.stderr)
            silent = True
            time.sleep(WAIT_POLL)
            continue
        except QueryRefused as e:
            refused += 1
            if refused >= WAIT_REFUSALS:
                raise UserError(e.error or str(e)) from None
            time.sleep(WAIT_POLL)
            continue
        except ClientError as e:
            raise UserError(str(e)) from None
        refused, silent = 0, False
        if not isinstance(row, dict):
            raise UserError(f"unexpected status answer from {addr}: {row!r}"[:200])
        state = row.get("state")
        if state != last:
            where = f" on {row['node']}" if row.get("node") and state != "pending" else ""
            print(f"{task_id}: {state}{where}", file=sys.stderr, flush=True)
            last = state
        if state in TERMINAL_STATES:
            return row
        time.sleep(WAIT_POLL)


def _task_id_arg(value: str) -> str:
    try:
        return parse_task_id(value)
    except TaskArgError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _state_arg(value: str) -> str:
    try:
        return parse_state(value)
    except TaskArgError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _limit_arg(value: str) -> int:
    try:
        return parse_limit(value)
    except TaskArgError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_status(args: argparse.Namespace) -> int:
    try:
        row = _ask(args.agent, "status", args.timeout, {"id": args.task_id})
    except UserError as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(row, indent=2, sort_keys=True))
    elif not isinstance(row, dict):
        return fail(f"unexpected status answer: {row!r}"[:200])
    else:
        print(format_task(row))
    return 0


def _count(data: dict[str, Any], key: str) -> int:
    v = data.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    query_args: dict[str, Any] = {"state": args.state or ""}
    if args.limit is not None:
        query_args["limit"] = args.limit
    try:
        data = _ask(args.agent, "tasks", args.timeout, query_args)
    except UserError as e:
        return fail(str(e))
    if not isinstance(data, dict):
        return fail(f"unexpected tasks answer: {data!r}"[:200])
    rows = [r for r in data.get("tasks") or [] if isinstance(r, dict)]
    limit = MAX_LIST_RECORDS if args.limit is None else args.limit
    omitted, unanswered = _count(data, "omitted"), _count(data, "unanswered")
    if len(rows) > limit:  # an agent that does not know --limit: keep the newest (listed last)
        omitted += len(rows) - limit
        rows = rows[-limit:]
        data = {**data, "tasks": rows, "omitted": omitted, "partial": True}
    if unanswered:
        print(f"({unanswered} agent{'s' if unanswered > 1 else ''} did not answer: the list may "
              "be incomplete)", file=sys.stderr)  # fmt: skip
    if omitted:
        print(f"({omitted} older task{'s' if omitted > 1 else ''} not shown: at most {limit} "
              "are listed; see --limit and --state)", file=sys.stderr)  # fmt: skip
    if data.get("partial") and not (omitted or unanswered):  # an agent older than both counts
        print("(some agents did not answer: list may be partial)", file=sys.stderr)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif not rows:
        print(f"no {args.state + ' ' if args.state else ''}tasks", file=sys.stderr)
    else:
        print(format_tasks(rows))
    return 0


def _write(stream: Any, text: str) -> None:
    if text:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    tid = args.task_id
    try:
        row = _ask(args.agent, "status", args.timeout, {"id": tid})
    except UserError as e:
        return fail(str(e))
    if not isinstance(row, dict):
        return fail(f"unexpected status answer: {row!r}"[:200])
    state = row.get("state")
    not_started = f"task {tid} has not started yet ({state})"
    if state in TERMINAL_STATES:
        out, err = row.get("stdout") or "", row.get("stderr") or ""
    elif state in ("running", "placed"):
        addr = row.get("node_addr") or ""
        if not addr:
            print(not_started, file=sys.stderr)
            return 0
        try:
            data = query(addr, "logs", timeout=args.timeout, args={"id": tid})
        except QueryRefused as e:
            if state == "placed":  # awarded, but the node may not have started it yet
                print(not_started, file=sys.stderr)
                return 0
            return fail(f"node {row.get('node') or addr}: {e.error}")
        except ClientError as e:
            return fail(f"cannot get the output of task {tid} from its node "
                        f"{row.get('node') or addr}: {e}")  # fmt: skip
        data = data if isinstance(data, dict) else {}
        out, err = str(data.get("stdout") or ""), str(data.get("stderr") or "")
    else:
        print(not_started, file=sys.stderr)
        return 0
    if args.stderr_only:  # the only thing asked for: on stdout, so that it can be piped
        out, err = err, ""
    elif args.stdout_only:
        err = ""
    if not out and not err:
        print(f"(task {tid} has no {'output' if not args.stderr_only else 'stderr'} "
              f"{'so far' if state not in TERMINAL_STATES else 'recorded'})",
              file=sys.stderr)  # fmt: skip
    _write(sys.stdout, out)
    _write(sys.stderr, err)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        data = _ask(args.agent, "cancel", args.timeout, {"id": args.task_id})
    except UserError as e:
        return fail(str(e))
    data = data if isinstance(data, dict) else {}
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    tid, state = data.get("id") or args.task_id, data.get("state") or "cancelled"
    print(f"cancelled {tid}" if state == "cancelled" else f"{tid} is {state}")
    return 0


def add_task_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="run a command somewhere in the cluster",
        description="Submit a task: the agent stores its record on r nodes (its replica set) "
        "and only then answers; the id it prints is the task's from then on. The cluster places "
        "the task on a node with room and runs it there (at least once: a task whose node fails "
        "runs again elsewhere). Put the command after --.",
        epilog="example: agora submit --cpus 2 --mem 4GiB --label zone=eu --deadline 10m "
        "-- python train.py --epochs 3",
    )
    _client_options(p, "submit to", timeout=SUBMIT_TIMEOUT, timeout_flag="--request-timeout")
    p.add_argument("--cpus", metavar="N",
                   help=f"CPUs the task reserves, e.g. 2 or 0.5 (default {DEFAULT_CPUS:g})",
                   )  # fmt: skip
    p.add_argument("--mem", "--memory", dest="mem", metavar="SIZE",
                   help="memory the task reserves, e.g. 4GiB or 512MiB (default 0)")  # fmt: skip
    p.add_argument("--gpus", metavar="N", help="GPUs the task reserves (default 0)")
    p.add_argument("--label", metavar="KEY=VALUE", action="append",
                   help="run only on a node with this label (repeatable: all must match)",
                   )  # fmt: skip
    p.add_argument("--env", metavar="KEY=VALUE", action="append",
                   help="set an environment variable for the task (repeatable)")  # fmt: skip
    p.add_argument("--cwd", metavar="DIR",
                   help="working directory on the node (default: the agent's)")  # fmt: skip
    p.add_argument("--deadline", metavar="DURATION",
                   help="should finish within this long after submission, e.g. 10m "
                   "('agora status' says whether it did; default none)")  # fmt: skip
    p.add_argument("--timeout", metavar="DURATION",
                   help="kill the task after it ran this long, e.g. 1h (default no limit)",
                   )  # fmt: skip
    p.add_argument("--expect", metavar="DURATION",
                   help="expected run time, the horizon placement forecasts load over "
                   f"(default {DEFAULT_EXPECTED:g}s)")  # fmt: skip
    p.add_argument("--id", metavar="ID",
                   help="the task's id (default: a random t-...); submitting the same id and "
                   "command again does not start a second task")  # fmt: skip
    p.add_argument("--wait", action="store_true",
                   help="wait until the task ends, print how it ended and exit 0 only if it "
                   "succeeded")  # fmt: skip
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]",
                   help="the command to run and its arguments")  # fmt: skip
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "status",
        help="show one task: state, node, exit code, timings, deadline",
        description="Look a task up through any agent and show its state, the node running it "
        "(or that ran it), the attempt, exit code and reason, its timings in local time and "
        "whether it met its deadline.",
    )
    p.add_argument("task_id", metavar="TASK_ID", type=_task_id_arg, help="the task's id")
    _client_options(p, "ask", timeout=TASK_TIMEOUT)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "tasks",
        help="list the cluster's tasks",
        description="List the tasks of the whole cluster, oldest first, as collected by one "
        "agent from every live node (AGE: time since submission; RAN: run time).",
    )
    _client_options(p, "ask", timeout=TASK_TIMEOUT)
    p.add_argument("--state", metavar="STATE", type=_state_arg,
                   help=f"only tasks in this state: {', '.join(TASK_STATES)}")  # fmt: skip
    p.add_argument("--limit", metavar="N", type=_limit_arg,
                   help=f"list only the newest N tasks (1 to {MAX_LIST_RECORDS}, the default); "
                   "how many were left out is said on stderr")  # fmt: skip
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser(
        "logs",
        help="print a task's output",
        description="Print a task's standard output (on stdout) and standard error (on "
        "stderr): the last part kept by its node while it runs, the tails stored in its record "
        "once it has ended (both bounded: only the end of a long output is kept).",
    )
    p.add_argument("task_id", metavar="TASK_ID", type=_task_id_arg, help="the task's id")
    _client_options(p, "ask", timeout=TASK_TIMEOUT, json_output=False)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stdout-only", action="store_true", help="print only standard output")
    which.add_argument("--stderr-only", action="store_true",
                       help="print only standard error (on stdout, for pipes)")  # fmt: skip
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "cancel",
        help="cancel a task",
        description="Cancel a task that has not ended: it will not be placed again and, if it "
        "is running, its node kills it (with everything it started).",
    )
    p.add_argument("task_id", metavar="TASK_ID", type=_task_id_arg, help="the task's id")
    _client_options(p, "ask", timeout=TASK_TIMEOUT)
    p.set_defaults(func=cmd_cancel)


# ---------------------------------------------------------------- ray-cluster

MAX_RAY_AGENTS = 65_535  # one port each


def _agent_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= MAX_RAY_AGENTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not from 1 to {MAX_RAY_AGENTS}")
    return n


def cmd_ray_cluster(args: argparse.Namespace) -> int:
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
    p.add_argument("--agents", "-n", type=_agent_count, required=True, metavar="N",
                   help=f"number of agents to start (1 to {MAX_RAY_AGENTS})")  # fmt: skip
    p.add_argument("--per-actor", "-k", type=_agent_count, default=25, metavar="K",
                   help="agents hosted by one Ray actor process (default 25)")  # fmt: skip
    p.add_argument("--duration", type=seconds_up_to(MAX_DURATION), metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--config", "-c", metavar="FILE",
                   help="agent config file (node.toml format); its [swim] table, load_interval "
                   "and join_timeout apply to every agent, other keys are ignored")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", metavar="HOST",
                   help="address the agents bind, on a port each picked by ZeroMQ "
                   "(default 127.0.0.1; 0.0.0.0 advertises the Ray node's IP)")  # fmt: skip
    p.add_argument("--base-port", type=int, metavar="PORT",
                   help="bind agent i to PORT+i instead of a random free port")  # fmt: skip
    p.add_argument("--timeout", type=client_timeout, default=60.0, metavar="S",
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
    add_task_parsers(sub)
    add_ray_cluster_parser(sub)
    keys_cli.add_parser(sub)
    scenario_cli.register(sub)
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
        if getattr(args, "key", None):
            use_credential(Credential.load(args.key))
        return int(func(args) or 0)
    except KeyFileError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `agora members | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
