"""The idle cost of membership: N agora agents beside N memberlist nodes, on this machine.

    python -m scenarios.bench.idle_membership [--nodes 50] [--warmup 60] [--window 30]
    python -m scenarios.bench --only idle-vs-memberlist     # the same, into docs/benchmarks.md

Why: what an idle cluster costs per node (CPU, memory, bytes and packets on the wire) means
little alone; memberlist (SWIM + Lifeguard, under Serf, Consul and Nomad) with agora's timings
on the same machine, in the same run, says what a mature implementation spends on the job.

How: one system at a time, never both at once (they would share the 2 cores), memberlist
first. N nodes on 127.0.0.1 (memberlist: ``mlnode -profile agora``, joined through the first
node; agora: `LocalCluster` with its default configuration), started and converged (every node
sees N alive), left idle for a warm-up (agora republishes its resource records for tens of
seconds after start-up), then measured over a window: CPU from /proc/<pid>/stat, RSS from
/proc/<pid>/status at its end, and what each node says it sent (mlnode's ``ST`` counters on
SIGUSR1; agora's ``stats`` query). Start to serving is measured apart, on 5 fresh single
processes of each system started one at a time. Progress goes to stderr; every process
started here is killed on every exit (by its own handle, never by name).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.client import ClientError, query
from deploy.local_cluster import REPO_ROOT, LocalCluster, free_ports
from scenarios.bench.lossy import find_mlnode, parse_mlnode
from scenarios.bench.machine import describe

HEADING = "### Idle membership beside memberlist (same machine, one after the other)"
STARTS = 5  # fresh single processes per system for start to serving
QUERY_TIMEOUT = 5.0  # a stats query on a busy 2-core machine
ST_TIMEOUT = 5.0  # for every mlnode to print its counters after SIGUSR1
START_TIMEOUT = 30.0  # one process up and serving
CLK_TCK = os.sysconf("SC_CLK_TCK")

Counters = tuple[float, float, float]  # (seconds, bytes sent, messages or packets sent)


def _progress(msg: str) -> None:
    print(f"[bench_idle] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- what a process used


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Idle:
    """Per node figures of one system over the window (a node that gave no counters at one
    end is left out of the rates; `answered` says how many did)."""

    cpu: list[float]  # % of one core
    rss: list[float]  # MiB
    bytes_s: list[float]
    msgs_s: list[float]
    answered: int
    window: float
    converge_s: float
    # agora: resource records republished per node per second over the window (as node0 saw
    # their versions move); what most of its bytes follow
    publishes_s: float | None = None
    # agora: of bytes_s, what went on streams (push-pull, and gossip too big for a datagram)
    stream_bytes_s: float | None = None


def measure(pids: Sequence[int], counters: Callable[[], list[Counters | None]],
            window: float, converge_s: float) -> Idle:  # fmt: skip
    """CPU between the two readings around the window; rates from each node's own counters."""
    t0 = time.monotonic()
    cpu0 = [cpu_seconds(p) for p in pids]
    c0 = counters()
    time.sleep(window)
    c1 = counters()
    cpu1 = [cpu_seconds(p) for p in pids]
    dt = time.monotonic() - t0
    rss = [rss_mib(p) for p in pids]
    pairs = [(a, b) for a, b in zip(c0, c1, strict=True) if a is not None and b is not None]
    return Idle(cpu=[100 * (b - a) / dt for a, b in zip(cpu0, cpu1, strict=True)], rss=rss,
                bytes_s=[(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs],
                msgs_s=[(b[2] - a[2]) / (b[0] - a[0]) for a, b in pairs],
                answered=len(pairs), window=dt, converge_s=converge_s)  # fmt: skip


def _wait(cond: Callable[[], bool], procs: Sequence[subprocess.Popen], timeout: float,
          what: str) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not cond():
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"process {dead[0].pid} exited with {dead[0].returncode} while "
                               f"waiting for {what}")  # fmt: skip
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- memberlist


_ST = re.compile(r"^ST (\d+(?:\.\d+)?) (.*)$")
_READY = re.compile(r"^READY (\d+(?:\.\d+)?) ", re.M)


def parse_st(lines: Sequence[str]) -> list[tuple[float, dict[str, int]]]:
    """mlnode's ``ST <ts> k=v ...`` lines -> (ts, counters), in order."""
    out = []
    for line in lines:
        m = _ST.match(line)
        if m:
            kv = dict(f.split("=", 1) for f in m.group(2).split() if "=" in f)
            out.append((float(m.group(1)), {k: int(v) for k, v in kv.items() if v.isdigit()}))
    return out


def _ready_ts(path: Path) -> float | None:
    m = _READY.search(path.read_text(errors="replace")) if path.exists() else None
    return float(m.group(1)) if m else None


class _Memberlist:
    """N mlnode processes on 127.0.0.1, each writing its stdout to a file in `workdir`."""

    def __init__(self, mlnode: str, workdir: Path) -> None:
        self.mlnode = mlnode
        self.dir = workdir
        self.procs: list[subprocess.Popen] = []

    def out(self, i: int) -> Path:
        return self.dir / f"n{i}.out"

    def spawn(self, port: int, join: int | None) -> float:
        """Start node n<len(procs)>; returns the wall clock just before the spawn."""
        i = len(self.procs)
        argv = [self.mlnode, "-name", f"n{i}", "-host", "127.0.0.1", "-port", str(port),
                "-profile", "agora"]  # fmt: skip
        if join is not None:
            argv += ["-join", f"127.0.0.1:{join}"]
        with self.out(i).open("wb") as f:
            t = time.time()
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                               stderr=subprocess.STDOUT))  # fmt: skip
        return t

    def lines(self, i: int) -> list[str]:
        """Its whole lines so far (not one it is still writing)."""
        text = self.out(i).read_text(errors="replace")
        return text[: text.rfind("\n") + 1].splitlines()

    def converged(self) -> bool:
        """Every node's last word on every other node is that it joined (alive)."""
        names = {f"n{i}" for i in range(len(self.procs))}
        for i in range(len(self.procs)):
            last: dict[str, str] = {}
            for m in parse_mlnode(f"n{i}", self.lines(i)):
                if m.status != "suspect":  # memberlist reports no refuted suspicion
                    last[m.peer] = m.status
            if {p for p, s in last.items() if s == "alive"} != names - {f"n{i}"}:
                return False
        return True

    def counters(self) -> list[Counters | None]:
        """SIGUSR1 to every node, then each one's new ST line: its own time, UDP + TCP bytes,
        UDP packets + TCP connections dialled and accepted (one message each way on each)."""
        before = [len(parse_st(self.lines(i))) for i in range(len(self.procs))]
        for p in self.procs:
            p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + ST_TIMEOUT
        out: list[Counters | None] = [None] * len(self.procs)
        while time.monotonic() < deadline and None in out:
            for i, seen in enumerate(before):
                st = parse_st(self.lines(i)) if out[i] is None else []
                if len(st) > seen:
                    ts, c = st[seen]
                    out[i] = (ts, c["udp_sent_bytes"] + c["tcp_sent_bytes"],
                              c["udp_sent"] + c["tcp_dialed"] + c["tcp_accepted"])  # fmt: skip
            time.sleep(0.05)
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def memberlist_idle(mlnode: str, n: int, warmup: float, window: float) -> Idle:
    with tempfile.TemporaryDirectory(prefix="agora-bench-idle-ml-") as tmp:
        ml = _Memberlist(mlnode, Path(tmp))
        try:
            ports = free_ports(n)
            t0 = time.monotonic()
            ml.spawn(ports[0], None)
            _wait(lambda: _ready_ts(ml.out(0)) is not None, ml.procs, START_TIMEOUT,
                  "the first mlnode to listen")  # fmt: skip
            for port in ports[1:]:
                ml.spawn(port, ports[0])
            _wait(ml.converged, ml.procs, 60.0 + n, f"every mlnode to see {n} alive")
            converge_s = time.monotonic() - t0
            _progress(f"memberlist: {n} nodes converged in {converge_s:.1f} s; "
                      f"{warmup:g} s warm-up, then {window:g} s measured")  # fmt: skip
            time.sleep(warmup)
            return measure([p.pid for p in ml.procs], ml.counters, window, converge_s)
        finally:
            ml.kill()


def memberlist_start(mlnode: str) -> float:
    """Median seconds from spawning a lone mlnode to the time on its READY line."""
    times = []
    with tempfile.TemporaryDirectory(prefix="agora-bench-idle-ml1-") as tmp:
        for _ in range(STARTS):
            ml = _Memberlist(mlnode, Path(tmp))
            try:
                t = ml.spawn(free_ports(1)[0], None)
                _wait(lambda ml=ml: _ready_ts(ml.out(0)) is not None, ml.procs, START_TIMEOUT,
                      "a lone mlnode to listen")  # fmt: skip
                times.append(_ready_ts(ml.out(0)) - t)
            finally:
                ml.kill()
    return statistics.median(times)


# ---------------------------------------------------------------- agora


def agora_idle(n: int, warmup: float, window: float) -> Idle:
    cluster = LocalCluster(n, log_level="WARNING", query_timeout=QUERY_TIMEOUT)
    try:
        t0 = time.monotonic()
        cluster.start(timeout=max(30.0, 1.5 * n))
        cluster.wait_converged(timeout=60.0 + n)
        converge_s = time.monotonic() - t0
        _progress(f"agora: {n} agents converged in {converge_s:.1f} s; "
                  f"{warmup:g} s warm-up, then {window:g} s measured")  # fmt: skip

        streams: list[list[Counters | None]] = []  # per reading: (time, stream bytes, 0)

        def counters() -> list[Counters | None]:
            """Each agent's transport counters: stream + datagram bytes, multipart stream
            messages + datagrams (a query's reply is not counted there)."""
            out: list[Counters | None] = []
            streams.append([])
            for node in cluster.nodes:
                try:
                    tr = query(node.addr, "stats", QUERY_TIMEOUT)["transport"]
                except ClientError:
                    out.append(None)
                    streams[-1].append(None)
                    continue
                sent = tr.get("bytes_sent", 0) + tr.get("datagram_bytes_sent", 0)
                msgs = tr.get("stream_messages", 0) + tr.get("datagrams_sent", 0)
                out.append((time.monotonic(), sent, msgs))
                streams[-1].append((out[-1][0], tr.get("bytes_sent", 0), 0))
            return out

        def versions() -> dict[str, int]:
            rows = query(cluster.nodes[0].addr, "members", QUERY_TIMEOUT)
            return {r["node"]: r["version"] for r in rows if r["version"] is not None}

        time.sleep(warmup)
        v0 = versions()
        idle = measure([node.proc.pid for node in cluster.nodes], counters, window, converge_s)
        v1 = versions()
        idle.publishes_s = sum(v - v0.get(k, v) for k, v in v1.items()) / n / idle.window
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(*streams, strict=True)
                 if a is not None and b is not None]  # fmt: skip
        idle.stream_bytes_s = _mean(rates)
        return idle
    finally:
        cluster.cleanup()


def _serving(addr: str, port: int, proc: subprocess.Popen) -> None:
    """Returns once a ``members`` query to the agent answers. Probes the port with a plain TCP
    connect first: a query's socket would retry a refused connection only every 100 ms."""

    def bound() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def answers() -> bool:
        try:
            query(addr, "members", 1.0)
            return True
        except ClientError:
            return False

    _wait(bound, [proc], START_TIMEOUT, f"an agent to listen on {addr}")
    _wait(answers, [proc], START_TIMEOUT, f"an agent on {addr} to answer")


def agora_start() -> float:
    """Median seconds from spawning a lone agent (the CLI, as LocalCluster starts it, default
    configuration) until a ``members`` query first answers."""
    times = []
    for i in range(STARTS):
        port = free_ports(1)[0]
        argv = [sys.executable, "-m", "deploy.cli", "agent", "--node-id", f"start{i}",
                "--bind", f"127.0.0.1:{port}"]  # fmt: skip
        t = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=str(REPO_ROOT))  # fmt: skip
        try:
            _serving(f"tcp://127.0.0.1:{port}", port, proc)
            times.append(time.monotonic() - t)
        finally:
            proc.kill()
            proc.wait()
    return statistics.median(times)


# ---------------------------------------------------------------- report


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _ratio(a: float, b: float | None) -> str:
    if b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return "–"
    return f"×{a / b:.2f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else (" — met" if ok else " — missed")


def render(ag: Idle, ag_start: float, ml: Idle | None, ml_start: float | None, n: int,
           warmup: float, window: float, machine: str, wall: float) -> str:  # fmt: skip
    """The markdown section; `ml` None: memberlist was not measured (mlnode not built)."""
    cmd = (f"python -m scenarios.bench.idle_membership --nodes {n} --warmup {warmup:g} "
           f"--window {window:g}")  # fmt: skip
    rows = []
    for label, fmt, a, b, target, ok in (
        ("CPU % of a core per node", ".2f", _mean(ag.cpu), ml and _mean(ml.cpu),
         "within 2× of memberlist", ml and _mean(ag.cpu) <= 2 * _mean(ml.cpu)),
        ("RSS MiB per node", ".1f", _mean(ag.rss), ml and _mean(ml.rss), "≤ 20 MiB",
         _mean(ag.rss) <= 20),
        ("bytes sent/s per node", ",.0f", _mean(ag.bytes_s), ml and _mean(ml.bytes_s),
         "within 2× of memberlist", ml and _mean(ag.bytes_s) <= 2 * _mean(ml.bytes_s)),
        ("messages or packets sent/s per node", ".1f", _mean(ag.msgs_s),
         ml and _mean(ml.msgs_s), "–", None),
        ("start to serving (s)", ".3f", ag_start, ml_start, "≤ 0.5 s", ag_start <= 0.5),
    ):  # fmt: skip
        rows.append(f"| {label} | {_num(b, fmt)} | {_num(a, fmt)} | {_ratio(a, b)} | "
                    f"{target}{_verdict(None if ok is None else bool(ok))} |")  # fmt: skip

    def maxima(s: Idle) -> str:
        return (f"CPU {max(s.cpu):.2f} %, RSS {max(s.rss):.1f} MiB, "
                f"{_num(max(s.bytes_s, default=math.nan), ',.0f')} bytes/s, "
                f"{_num(max(s.msgs_s, default=math.nan), '.1f')} sent/s")  # fmt: skip

    def coverage(name: str, s: Idle) -> list[str]:
        if s.answered == n:
            return []
        return [f"- {name}: only {s.answered} of {n} nodes gave their counters at both ends "
                "of the window; the rates are theirs."]  # fmt: skip

    if ml is None:
        ml_lines = ["- memberlist was not measured: `mlnode` is not built here ($MLNODE, PATH, "
                    "/root/bin, ~/bin); build it as ../shared/peers/memberlist/README.md says. "
                    "Its cells are –."]  # fmt: skip
    else:
        ml_lines = [f"- max per node, memberlist: {maxima(ml)}; converged {ml.converge_s:.1f} s "
                    f"after the first spawn; window {ml.window:.1f} s.",
                    *coverage("memberlist", ml)]  # fmt: skip
    return "\n".join([
        HEADING,
        "",
        f"`{cmd}` — {wall:.0f} s wall. {n} nodes of each system on 127.0.0.1, one system at a "
        "time (memberlist first): started, converged (every node sees all alive), idle for "
        f"{warmup:g} s, then measured over {window:g} s; mean per node (maxima below). "
        f"Machine: {machine}.",
        "",
        "| measure | memberlist | agora | agora/memberlist | target |",
        "|:---|---:|---:|---:|:---|",
        *rows,
        "",
        f"- max per node, agora: {maxima(ag)}; converged {ag.converge_s:.1f} s after the first "
        f"spawn; window {ag.window:.1f} s.",
        f"- agora's bytes: {_num(ag.stream_bytes_s, ',.0f')} bytes/s per node on streams "
        "(push-pull, and gossip too big for a datagram), the rest datagrams (probes and "
        "gossip).",
        f"- agora's resource records were republished {_num(ag.publishes_s, '.3f')} times per "
        "node per second in the window (as node0's table saw their versions move): an agent "
        "republishes when its machine's load (averaged over 10 s) or forecast moves by 5 %, "
        "and every node then gossips the new record, so its bytes follow the machine's noise "
        "(`python -m scenarios.bench.idle_bytes` shows them by kind for such rates).",
        *coverage("agora", ag),
        *ml_lines,
        "- memberlist: `mlnode -profile agora` (agora's timings: probe 0.4 s, gossip 0.2 s to "
        "3, push-pull 10 s), joined through the first node; agora: `LocalCluster` with its "
        "default configuration (SwimConfig, 1 s load sampling, forecaster `meta`).",
        "- agora's bytes and messages include its resource records (capacity, load, "
        "forecast, allocations), gossiped and pushed; memberlist carries no payload at all "
        "(no node meta, no user messages): it is the cost of membership alone.",
        "- CPU: utime + stime from /proc/<pid>/stat over the window (resolution 1/"
        f"{CLK_TCK} s per process); RSS: VmRSS at the window's end. Bytes and messages: what "
        "each node says it sent (memberlist: UDP + TCP bytes; UDP packets, each possibly a "
        "compound of several messages, plus TCP connections dialled and accepted, one "
        "message each way on each; agora: stream + datagram bytes; multipart stream messages "
        "+ datagrams). Reading the counters (SIGUSR1 / a `stats` query) falls inside the "
        "window for both.",
        f"- start to serving: median of {STARTS} lone processes started one at a time "
        "(memberlist: spawn → the time on its READY line; agora: spawn of `python -m "
        "deploy.cli agent --node-id X --bind 127.0.0.1:PORT` → first answer to a `members` "
        "query, which includes the Python interpreter's and the imports' start-up).",
        "- this machine is shared (other work may run on its cores); one run: rerun to see "
        "the spread.",
        "",
    ])  # fmt: skip


def run(n: int = 50, warmup: float = 60.0, window: float = 30.0) -> str:
    """Measure memberlist (if built), then agora; return the markdown section."""
    machine = describe(with_load=True)
    t0 = time.monotonic()
    mlnode = find_mlnode()
    ml = ml_start = None
    if mlnode is None:
        _progress("mlnode not found: measuring agora only")
    else:
        _progress(f"memberlist: {STARTS} lone starts, then {n} nodes ({mlnode})")
        ml_start = memberlist_start(mlnode)
        ml = memberlist_idle(mlnode, n, warmup, window)
    _progress(f"agora: {STARTS} lone starts, then {n} agents")
    ag_start = agora_start()
    ag = agora_idle(n, warmup, window)
    return render(ag, ag_start, ml, ml_start, n, warmup, window, machine, time.monotonic() - t0)


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number > 0 of `kind` (int or float)."""
    what = "whole number" if kind is int else "number of seconds"

    def parse(text: str) -> float:
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive {what}, got {text!r}")
        return v

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.idle_membership",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--nodes", type=_positive(int), default=50, metavar="N",
                   help="nodes of each system (default 50)")  # fmt: skip
    p.add_argument("--warmup", type=_positive(float), default=60.0, metavar="S",
                   help="idle seconds after convergence before measuring (default 60)")  # fmt: skip
    p.add_argument("--window", type=_positive(float), default=30.0, metavar="S",
                   help="seconds measured (default 30)")  # fmt: skip
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    print(run(args.nodes, args.warmup, args.window), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
