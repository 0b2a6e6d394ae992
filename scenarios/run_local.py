"""Local mode: a scenario played by real `agora agent` processes on this machine.

As root with `ip` and `nft` (CI runs as root), every agent runs in its own network namespace
with its own address in 198.18.0.0/16, all joined by a bridge (`scenarios.netns`), so each binds
port 7946 as on a real node, and partitions and loss are kernel packet filters: nftables drops on
each receiver's INPUT hook, the way Jepsen injects faults. Without root the agents share
loopback and partitions and loss are applied inside each agent's transport (its `fault_rules`
file). Added delay is always applied inside the transport (this kernel has no netem). Crashes
are SIGKILL, restarts start the same node id at the same address, pauses are SIGSTOP/SIGCONT.

Each agent replays its node's background trace as its load (`[replay]`) and writes a JSON-lines
event log; the checkers and metrics read those logs and the agents' answers to `status`
queries, never process memory. The runner also reads each agent process's resident memory
(psutil) every `RSS_INTERVAL` seconds, for the report's memory table and plot. Tasks are
`sleep <expected>` commands: they hold their reserved CPUs for their expected time but burn
none, so unlike the simulator a task does not slow down when its node is busy.

Nothing is left behind: every agent is stopped and every namespace removed at the end, on error,
on Ctrl-C or SIGTERM; a runner killed with SIGKILL leaves a state file that the next run (or
`cleanup_leftovers`) uses to kill its agents and remove its namespaces.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agent.event_log import read_events
from deploy.client import ClientError, QueryRefused, query
from deploy.local_cluster import REPO_ROOT, free_ports, write_config
from gossip.auth import Credential, Keyring
from gossip.config import SwimConfig
from scenarios import netns
from scenarios.arrivals import generate
from scenarios.faults import FaultEvent, resolve
from scenarios.observation import (
    TERMINAL,
    AppliedFault,
    Commit,
    MemberEvent,
    Observation,
    Record,
    RssSample,
    Run,
    TaskOutcome,
)
from scenarios.policies import POLICIES
from scenarios.run_sim import backgrounds, configs, shapes
from scenarios.sim.placement_cluster import detection_bound
from scenarios.spec import Scenario, ScenarioError

log = logging.getLogger(__name__)

AGENT_RSS = 60 << 20  # measured ~44 MiB per agent (docs/benchmarks.md), with headroom
MAX_LOCAL_NODES = netns.MAX_HOSTS
PORT = 7946
STATE_DIR = Path(os.environ.get("AGORA_SCENARIO_STATE", "/tmp/agora-scenario-state"))
QUERY_TIMEOUT = 3.0
RSS_INTERVAL = 2.0  # seconds between resident-memory samples of every agent process


@dataclass
class Plan:
    """What a local run will use, decided (and refused if impossible) before anything starts."""

    sc: Scenario
    network_kind: str  # namespaces | loopback
    why_loopback: str
    memory_needed: int
    workdir: Path | None = None
    python: str = sys.executable


def plan(sc: Scenario, *, network: str = "auto", workdir: str | Path | None = None) -> Plan:
    n = sc.cluster.nodes
    if n > MAX_LOCAL_NODES:
        raise ScenarioError(f"{sc.source}: a local run is limited to {MAX_LOCAL_NODES} agents "
                            f"(cluster.nodes = {n}); use --mode sim")  # fmt: skip
    need = n * AGENT_RSS
    avail = psutil.virtual_memory().available
    if need > 0.7 * avail:
        raise ScenarioError(
            f"{sc.source}: a local run of {n} agents needs about {need / 2**30:.1f} GiB "
            f"({AGENT_RSS >> 20} MiB each); this machine has {avail / 2**30:.1f} GiB available "
            "- use --mode sim or fewer nodes")
    ok, why = netns.available()
    if network == "namespaces" and not ok:
        raise ScenarioError(f"network namespaces are not available here: {why}")
    kind = "namespaces" if ok and network != "loopback" else "loopback"
    why = "" if kind == "namespaces" else (why or "asked for loopback")
    return Plan(sc, kind, why, need, Path(workdir) if workdir else None)


# ---------------------------------------------------------------------- leftovers


def _is_agent(pid: int) -> bool:
    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return False
    return "deploy.cli" in cmd and "agent" in cmd


def cleanup_leftovers() -> list[str]:
    """Kill agents and remove namespaces left by runners that died without cleaning up."""
    removed = []
    live_networks: set[str] = set()
    if STATE_DIR.is_dir():
        for f in STATE_DIR.glob("*.json"):
            try:
                state = json.loads(f.read_text())
                runner = int(state["runner"])
            except (OSError, ValueError, KeyError, TypeError):
                f.unlink(missing_ok=True)
                continue
            if runner != os.getpid() and psutil.pid_exists(runner) and _is_runner(runner):
                if isinstance(state.get("network"), str):
                    live_networks.add(state["network"])  # another live run: leave it be
                continue
            for pid in state.get("agents", []):
                if isinstance(pid, int) and _is_agent(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        removed.append(f"agent pid {pid}")
                    except ProcessLookupError:
                        pass
            f.unlink(missing_ok=True)
    if netns.available()[0]:
        removed += netns.cleanup_leftovers(keep=live_networks)
    return removed


def _is_runner(pid: int) -> bool:
    try:
        return "scenario" in " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


# ---------------------------------------------------------------------- one run


@dataclass
class _Agent:
    index: int
    node_id: str
    addr: str
    config: Path
    log_path: Path
    events: Path
    rules: Path
    proc: subprocess.Popen | None = None
    paused: bool = False
    stats_sent: dict[int, int] = field(default_factory=dict)  # pid -> last transport sent


class _Cluster:
    """The agent processes of one local run and their network; `close()` removes it all."""

    def __init__(self, p: Plan, policy: str, seed: int, workdir: Path) -> None:
        self.plan = p
        self.sc = sc = p.sc
        self.workdir = workdir
        self.n = n = sc.cluster.nodes
        self.net: netns.NamespacedNetwork | None = None
        self.state_file = STATE_DIR / f"{os.getpid()}-{secrets.token_hex(3)}.json"
        if p.network_kind == "namespaces":
            self.net = netns.NamespacedNetwork(secrets.token_hex(3), n)
            addrs = [f"tcp://{self.net.host_addr(i)}:{PORT}" for i in range(n)]
        else:
            addrs = [f"tcp://127.0.0.1:{port}" for port in free_ports(n)]
        self.agents = [_Agent(i, f"n{i}", addrs[i], workdir / f"n{i}.toml", workdir / f"n{i}.log",
                              workdir / f"n{i}.events.jsonl", workdir / f"n{i}.rules.json")
                       for i in range(n)]  # fmt: skip
        self.loss: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.blocked: dict[int, set[int]] = {}
        self.policy = policy
        self.seed = seed
        self.cluster_key: Path | None = None
        self.credential: Credential | None = None
        if sc.cluster.keys:
            self.cluster_key = workdir / "cluster.key"
            ring = Keyring.generate()
            ring.save(self.cluster_key)
            self.credential = Credential.issue(ring, "admin", "scenario-runner")

    # -------------------------------------------------------------- set-up

    def write_configs(self, epoch: float) -> None:
        sc = self.sc
        _swim, placement = configs(sc, self.policy)
        node_shapes = shapes(sc, self.seed)
        traces = backgrounds(sc, self.seed)
        table_swim = dict(sc.cluster.swim)
        table_placement = {**sc.cluster.placement, "policy": placement.policy,
                           "forecast_step": placement.forecast_step}  # fmt: skip
        seeds = [a.addr for a in self.agents[:3]]
        for a in self.agents:
            sh = node_shapes[a.index]
            top: dict[str, Any] = {
                "node_id": a.node_id, "bind": a.addr, "join": [s for s in seeds if s != a.addr],
                "join_timeout": 60.0 + self.n, "load_interval": sc.cluster.load_interval,
                "log_level": "WARNING", "forecaster": POLICIES[self.policy][1],
                "event_log": str(a.events), "fault_rules": str(a.rules),
            }  # fmt: skip
            if self.cluster_key is not None:
                top["cluster_key"] = str(self.cluster_key)
            tables: dict[str, dict[str, Any]] = {
                "resources": {"cpus": sh.cpus, "memory": sh.memory, "gpus": sh.gpus,
                              "labels": dict(sh.labels)},
                "swim": table_swim, "placement": table_placement,
            }  # fmt: skip
            if traces is not None:
                bg = traces[a.index]
                trace = self.workdir / f"n{a.index}.trace"
                trace.write_text("".join(f"{100 * v!r}\n" for v in bg.values))
                tables["replay"] = {"trace": str(trace), "step": bg.step, "offset": bg.offset,
                                    "epoch": epoch}  # fmt: skip
            write_config(a.config, top, tables)

    def _save_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        pids = [a.proc.pid for a in self.agents if a.proc is not None]
        network = self.net.run_id if self.net is not None else None
        self.state_file.write_text(json.dumps({"runner": os.getpid(), "agents": pids,
                                               "network": network}))  # fmt: skip

    def spawn(self, a: _Agent) -> None:
        argv = [self.plan.python, "-m", "deploy.cli", "agent", "--config", str(a.config)]
        if self.net is not None:
            argv = self.net.exec_argv(a.index, argv)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"]
                                              if env.get("PYTHONPATH") else "")  # fmt: skip
        env["PYTHONUNBUFFERED"] = "1"
        with a.log_path.open("ab") as logf:
            a.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
                                      start_new_session=True)  # fmt: skip
        a.paused = False
        self._save_state()

    def start(self, stop: Callable[[], bool], timeout: float) -> None:
        if self.net is not None:
            self._save_state()  # before the network exists: a concurrent run must keep it
            self.net.create()
        for a in self.agents:
            self.write_rules(a.index)
        self.spawn(self.agents[0])
        self.wait_answering([self.agents[0]], timeout, stop)
        for a in self.agents[1:]:
            self.spawn(a)
        self.wait_answering(self.agents, timeout, stop)

    def wait_answering(self, agents: list[_Agent], timeout: float,
                       stop: Callable[[], bool]) -> None:  # fmt: skip
        deadline = time.monotonic() + timeout
        pending = list(agents)
        while pending:
            for a in list(pending):
                if a.proc is not None and a.proc.poll() is not None:
                    raise ScenarioError(f"agent {a.node_id} exited with {a.proc.returncode}: "
                                        + _tail(a.log_path))  # fmt: skip
                try:
                    query(a.addr, "stats", 0.3, credential=self.credential)
                    pending.remove(a)
                except ClientError:
                    pass
            if stop():
                raise KeyboardInterrupt
            if pending and time.monotonic() > deadline:
                raise ScenarioError("agents not answering after "
                                    f"{timeout:.0f} s: {', '.join(a.node_id for a in pending)}")
            if pending:
                time.sleep(0.05)

    def wait_converged(self, timeout: float, stop: Callable[[], bool]) -> float:
        t0 = time.monotonic()
        want = {a.node_id for a in self.agents}
        while time.monotonic() - t0 < timeout:
            if stop():
                raise KeyboardInterrupt
            ok = True
            for a in self.agents:
                try:
                    rows = query(a.addr, "members", 1.0, credential=self.credential)
                except ClientError:
                    ok = False
                    break
                if {r["node"] for r in rows if r["status"] == "alive"} != want:
                    ok = False
                    break
            if ok:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise ScenarioError(f"the {self.n} agents did not converge within {timeout:.0f} s")

    # -------------------------------------------------------------- faults

    def write_rules(self, i: int) -> None:
        """The transport's own rules for agent i (loopback: everything; namespaces: delay)."""
        a = self.agents[i]
        rules: dict[str, Any] = {"delay": self.delay.get(i, 0.0)}
        if self.net is None:
            rules["loss"] = self.loss.get(i, 0.0)
            rules["blocked"] = sorted(self.agents[j].addr for j in self.blocked.get(i, ()))
        tmp = a.rules.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, a.rules)

    def apply(self, e: FaultEvent) -> str:
        """Apply one fault event now; returns the mechanism used."""
        act = e.action
        if act == "crash":
            for i in e.nodes:
                a = self.agents[i]
                if a.proc is not None and a.proc.poll() is None:
                    a.proc.kill()
                    a.proc.wait()
            return "SIGKILL of the agent process"
        if act == "restart":
            for i in e.nodes:
                a = self.agents[i]
                if a.proc is None or a.proc.poll() is not None:
                    self.spawn(a)
            return "new agent process, same node id, address and config"
        if act in ("pause", "resume"):
            sig = signal.SIGSTOP if act == "pause" else signal.SIGCONT
            for i in e.nodes:
                a = self.agents[i]
                if a.proc is not None and a.proc.poll() is None:
                    os.kill(a.proc.pid, sig)
                    a.paused = act == "pause"
            return f"{sig.name} of the agent process"
        if act == "partition":
            group = {i: gi for gi, g in enumerate(e.groups) for i in g}
            groups = [list(g) for g in e.groups]
            rest = [i for i in range(self.n) if i not in group]
            if rest:
                groups.append(rest)
                for i in rest:
                    group[i] = len(groups) - 1
            if self.net is not None:
                self.net.partition(groups)
                return "nftables drop on each receiver's INPUT hook (namespaces)"
            self.blocked = {i: {j for j in range(self.n) if group[j] != group[i]}
                            for i in range(self.n)}  # fmt: skip
            for i in range(self.n):
                self.write_rules(i)
            return "sender-side drop in each agent's transport (fault_rules, loopback)"
        if act == "heal":
            if self.net is not None:
                self.net.heal()
                return "nftables partition rules removed (namespaces)"
            self.blocked = {}
            for i in range(self.n):
                self.write_rules(i)
            return "transport block lists cleared (loopback)"
        targets = e.nodes or tuple(range(self.n))
        if act == "loss":
            for i in targets:
                self.loss[i] = e.value
                if self.net is not None:
                    self.net.set_loss(i, 100 * e.value)
                else:
                    self.write_rules(i)
            if self.net is not None:
                return "nftables random drop on the INPUT hook (namespaces; whole percent)"
            return "sender-side random drop in the agent's transport (fault_rules, loopback)"
        for i in targets:  # delay
            self.delay[i] = e.value
            self.write_rules(i)
        return "added in the agent's transport (fault_rules; the kernel has no netem)"

    # -------------------------------------------------------------- observing

    def live(self) -> list[_Agent]:
        return [a for a in self.agents if a.proc is not None and a.proc.poll() is None
                and not a.paused]  # fmt: skip

    def poll_stats(self) -> None:
        for a in self.live():
            try:
                s = query(a.addr, "stats", 0.5, credential=self.credential)
            except ClientError:
                continue
            a.stats_sent[a.proc.pid] = int(s.get("transport", {}).get("sent", 0))

    def sample_rss(self, t: float) -> list[RssSample]:
        """Resident memory of every agent process that exists (paused ones included)."""
        out = []
        for a in self.agents:
            if a.proc is None or a.proc.poll() is not None:
                continue
            try:
                rss = psutil.Process(a.proc.pid).memory_info().rss
            except psutil.Error:
                continue  # it died between the poll and the read
            out.append(RssSample(t, a.node_id, a.proc.pid, rss))
        return out

    def status(self, task: str) -> dict[str, Any] | None:
        for a in self.live():
            try:
                return query(a.addr, "status", QUERY_TIMEOUT, {"id": task},
                             credential=self.credential)  # fmt: skip
            except QueryRefused:
                return None  # the cluster answered: no such task
            except ClientError:
                continue
        return None

    def close(self) -> None:
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                try:
                    os.kill(a.proc.pid, signal.SIGCONT)
                    a.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5.0
        for a in self.agents:
            if a.proc is None:
                continue
            try:
                a.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait()
        if self.net is not None:
            self.net.destroy()
        self.state_file.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(p: Plan, policy: str, seed: int,
        progress: Callable[[float, int, int], None] | None = None,
        stop: Callable[[], bool] = lambda: False) -> Observation:  # fmt: skip
    """Play the scenario once with real agents; everything is removed before this returns."""
    import tempfile

    sc = p.sc
    cleaned = cleanup_leftovers()
    if cleaned:
        log.warning("removed leftovers of an earlier run: %s", ", ".join(cleaned))
    tmp = None
    if p.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="agora-scenario-")
        workdir = Path(tmp.name)
    else:
        workdir = p.workdir / f"{policy}-seed{seed}"
        workdir.mkdir(parents=True, exist_ok=True)
    c = _Cluster(p, policy, seed, workdir)
    swim = SwimConfig(**sc.cluster.swim)
    node_shapes = shapes(sc, seed)
    obs = Observation(policy, seed, "local", [a.node_id for a in c.agents],
                      {f"n{i}": (s.cpus, s.memory, s.gpus) for i, s in enumerate(node_shapes)},
                      sc.duration, detection_window=detection_bound(swim, c.n))  # fmt: skip
    obs.notes.append(f"network: {p.network_kind}" + (f" ({p.why_loopback})" if p.why_loopback
                                                     else ""))  # fmt: skip
    t0 = math.nan
    try:
        startup = 3.0 + 0.4 * c.n  # agents usually converge within this; if not, noted
        epoch = time.time() + startup
        c.write_configs(epoch)
        c.start(stop, 30.0 + c.n)
        c.wait_converged(30.0 + c.n, stop)
        now = time.time()
        if now < epoch:
            time.sleep(epoch - now)
        else:
            obs.notes.append(f"started {now - epoch:.1f} s after the replay epoch: backgrounds "
                             "lead the simulator's by that much")  # fmt: skip
        t0 = max(epoch, now)
        _play(c, obs, t0, seed, progress, stop)
    except KeyboardInterrupt:
        obs.complete = False
        obs.notes.append("interrupted")
    except ScenarioError as e:
        obs.complete = False
        obs.notes.append(f"failed: {e}")
        raise
    finally:
        if not math.isnan(t0):
            obs.end = time.time() - t0
        c.close()
        if not math.isnan(t0):
            _read_logs(c, obs, t0)
        if tmp is not None:
            tmp.cleanup()
    return obs


def _play(c: _Cluster, obs: Observation, t0: float, seed: int,
          progress: Callable[[float, int, int], None] | None, stop: Callable[[], bool]) -> None:
    sc = c.sc
    node_shapes = shapes(sc, seed)
    traces = backgrounds(sc, seed)
    arrivals = generate(sc, seed, [s.cpus for s in node_shapes], traces)
    faults = resolve(sc, seed)
    timeline: list[tuple[float, int, object]] = sorted(
        [(a.t, 0, a) for a in arrivals] + [(e.t, 1, e) for e in faults],
        key=lambda x: (x[0], x[1]))  # fmt: skip
    outcomes: dict[str, TaskOutcome] = {}
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="submit")
    pending: dict[str, Future] = {}
    next_stats = 0.0
    next_progress = 0.0
    next_rss = 0.0

    def submit(a: Any, addr: str) -> tuple[bool, str, tuple[str, ...]]:
        spec = {"argv": ["sleep", f"{a.expected:.3f}"], "cpus": a.cpus, "memory": a.memory,
                "expected": a.expected, "deadline": a.deadline}  # fmt: skip
        try:
            data = query(addr, "submit", 10.0, {"id": a.task_id, "spec": spec},
                         credential=c.credential)  # fmt: skip
        except ClientError as e:
            return False, str(e), ()
        return True, "", tuple(data.get("replicas", ())) if isinstance(data, dict) else ()

    def rel() -> float:
        return time.time() - t0

    try:
        k = 0
        while True:
            if stop():
                raise KeyboardInterrupt
            t = rel()
            while k < len(timeline) and timeline[k][0] <= t:
                _, kind, x = timeline[k]
                k += 1
                if kind == 0:
                    live = c.live()
                    o = TaskOutcome(x.task_id, rel(), False, x.cpus, x.memory, x.expected,
                                    x.deadline)  # fmt: skip
                    outcomes[x.task_id] = o
                    if not live:
                        o.error = "no agent up to submit through"
                        continue
                    via = next(a for a in c.agents[x.via:] + c.agents[:x.via] if a in live)
                    pending[x.task_id] = pool.submit(submit, x, via.addr)
                else:
                    mech = c.apply(x)
                    obs.faults.append(AppliedFault(x, rel(), mech))
            if t >= next_stats:
                c.poll_stats()
                next_stats = t + 5.0
            if t >= next_rss:
                obs.rss += c.sample_rss(t)
                next_rss = t + RSS_INTERVAL
            if progress is not None and t >= next_progress:
                done = sum(1 for f in pending.values() if f.done())
                progress(min(t, sc.duration), done, len(obs.faults))
                next_progress = t + 1.0
            if k >= len(timeline) and t >= sc.duration:
                break
            wait = (timeline[k][0] if k < len(timeline) else sc.duration) - rel()
            time.sleep(min(0.05, max(0.0, wait)))
        for tid, f in pending.items():
            o = outcomes[tid]
            o.accepted, o.error, o.replicas = f.result()
        _drain(c, obs, outcomes, t0, progress, stop)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for tid, f in pending.items():
            if f.done() and not f.cancelled():
                o = outcomes[tid]
                o.accepted, o.error, o.replicas = f.result()
        obs.tasks = [outcomes[k] for k in sorted(outcomes, key=lambda k: int(k[1:]))]


def _record(row: dict[str, Any], t0: float) -> Record:
    def rel(x: Any) -> float:
        return float(x) - t0 if isinstance(x, int | float) and x else math.nan

    return Record(row["state"], row.get("node") or "", int(row.get("attempt") or 0),
                  int(row["exit_code"]) if row.get("exit_code") is not None else 0,
                  rel(row.get("submitted")), rel(row.get("placed")), rel(row.get("started")),
                  rel(row.get("finished")))  # fmt: skip


def _drain(c: _Cluster, obs: Observation, outcomes: dict[str, TaskOutcome], t0: float,
           progress: Callable[[float, int, int], None] | None,
           stop: Callable[[], bool]) -> None:  # fmt: skip
    """Wait (at most the scenario's drain) for accepted tasks to end; read their records."""
    sc = c.sc
    deadline = time.time() + sc.drain
    open_ = [t for t in outcomes.values() if t.accepted]
    next_rss = 0.0
    while True:
        if time.time() >= next_rss:
            obs.rss += c.sample_rss(time.time() - t0)
            next_rss = time.time() + RSS_INTERVAL
        still = []
        for o in open_:
            row = c.status(o.task)
            if row is not None:
                o.record = _record(row, t0)
            if o.record is None or o.record.state not in TERMINAL:
                still.append(o)
        open_ = still
        if progress is not None:
            progress(sc.duration, sum(1 for o in outcomes.values() if o.record is not None
                                      and o.record.state in TERMINAL), len(obs.faults))
        if not open_ or time.time() >= deadline:
            break
        if stop():
            raise KeyboardInterrupt
        c.poll_stats()
        time.sleep(1.0)
    c.poll_stats()


def _read_logs(c: _Cluster, obs: Observation, t0: float) -> None:
    """Runs, commits, member changes and loads from every agent's event log."""
    for a in c.agents:
        obs.messages_sent += sum(a.stats_sent.values())
        if not a.events.exists():
            continue
        try:
            events = read_events(a.events)
        except (OSError, ValueError) as e:
            obs.notes.append(f"{a.node_id}: event log unreadable: {e}")
            continue
        open_runs: dict[tuple[str, int], Run] = {}
        for ev in events:
            t = float(ev.get("t", 0.0)) - t0
            kind = ev.get("ev")
            if t > obs.end and kind != "start":
                continue  # the runner's own stop at the end is not part of the run
            if kind == "start":
                open_runs = {}  # a new process: the old one's runs died with it
            elif kind == "run_start":
                r = Run(a.node_id, ev["task"], int(ev["attempt"]), t, float(ev["cpus"]),
                        int(ev["memory"]), int(ev.get("gpus", 0)))  # fmt: skip
                open_runs[(r.task, r.attempt)] = r
                obs.runs.append(r)
            elif kind == "run_end":
                r = open_runs.pop((ev["task"], int(ev["attempt"])), None)
                if r is not None:
                    r.end, r.state, r.exit_code = t, ev["state"], int(ev["exit_code"])
            elif kind == "commit":
                obs.commits.append(Commit(t, a.node_id, ev["task"], int(ev["attempt"]),
                                          ev["runner"], ev["state"]))  # fmt: skip
            elif kind == "member":
                obs.members.append(MemberEvent(t, a.node_id, ev["peer"], ev["status"]))
            elif kind == "load" and t >= 0:
                obs.loads.append((t, a.node_id, float(ev["load"])))
    obs.members.sort(key=lambda m: m.t)
