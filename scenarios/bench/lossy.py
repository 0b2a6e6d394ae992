"""agora's membership beside HashiCorp memberlist on one real, lossy network (issue 12).

    python -m scenarios.bench.lossy [--quick] [--keep-logs DIR]   # prints the markdown section
    python -m scenarios.bench --only lossy         # the same, into docs/benchmarks.md

Why side by side: a false failure count means little alone. memberlist (SWIM + Lifeguard, the
library under Serf, Consul and Nomad) on the very same wire, at the same moment, says what a
mature implementation does with it.

How: one `scenarios.netns.NamespacedNetwork` of 10 hosts (198.18.0.1-10 on one bridge). In each
namespace run one agora agent, started with the cluster's own CLI (``python -m deploy.cli agent
--config ...`` as the local scenario runner starts it; default `SwimConfig`, no forecaster, no
tasks) on TCP port 7946, and one `mlnode` (../shared/peers/memberlist: one memberlist node per
process, ``-profile agora``: agora's default timings) on port 7947. Every fault is an nftables
rule on each receiver's INPUT hook, so it hits both systems at once and is silent loss, as on a
wire. The timeline, after both clusters have converged (`FULL`; `--quick` is `QUICK`):

1. SIGKILL of both systems' node n9, no loss (time until all 9 survivors see it dead); both
   restarted, and both clusters converged again;
2. 20 % loss on every host for 180 s, then a rest without loss;
3. 40 % loss for 120 s, then a period without loss (failures after it; time to recover: until
   every node sees all 10 alive and goes on doing so);
4. a 5 | 5 partition for 30 s (time until the first / every node of the other side is declared
   dead), then the heal and a period to re-merge (until every node first sees all 10 alive; and
   declarations about nodes that stayed reachable: flapping).

Every figure comes from the nodes' own event stamps (wall clock, one machine): agora's
JSON-lines event logs (``member`` events) and mlnode's stdout (``EV join|leave``: a node seen
alive / dead; ``ML ... Suspect X has failed``: a suspicion its own probe raised). Counts are per
observer: one node declared dead by 9 observers counts 9. "Sees alive" means holds it as a
member (alive or suspect) in both systems, since memberlist does not report a suspicion that
was refuted.

Needs root with `ip` and `nft`, and a built `mlnode` (``$MLNODE``, on PATH, or in /root/bin or
~/bin; build: ../shared/peers/memberlist/README.md). Without them, or while another namespaced
run holds the network, the section says so in one line. Progress goes to stderr. Every process
and namespace is removed on every exit; a SIGKILLed run leaves a state file that the next local
scenario run (or ``agora scenario cleanup``) uses to remove them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.event_log import read_events
from deploy.client import ClientError, query
from deploy.local_cluster import REPO_ROOT, write_config
from scenarios import netns
from scenarios.bench.machine import describe
from scenarios.metrics import all_alive_from
from scenarios.observation import MemberEvent

N = 10
AGORA_PORT = 7946
ML_PORT = 7947
SIDES = (tuple(range(N // 2)), tuple(range(N // 2, N)))
VICTIM = N - 1  # the node crashed (and restarted) first
QUERY_TIMEOUT = 1.0
START_TIMEOUT = 90.0  # both clusters up and converged
SYSTEMS = ("agora", "memberlist")


@dataclass(frozen=True)
class Phases:
    """Seconds each step of the timeline lasts."""

    settle: float  # after convergence, before the first fault
    loss20: float
    rest: float  # no loss, between the two loss phases
    loss40: float
    after: float  # no loss, after the 40 % phase
    partition: float
    heal: float  # after the heal, to re-merge
    crash: float  # at most this long for the survivors to see the crash


FULL = Phases(settle=10, loss20=180, rest=30, loss40=120, after=60, partition=30, heal=60,
              crash=30)  # fmt: skip
QUICK = Phases(settle=5, loss20=30, rest=15, loss40=30, after=20, partition=30, heal=30,
               crash=20)  # fmt: skip


def _progress(msg: str) -> None:
    print(f"[bench_lossy] {msg}", file=sys.stderr, flush=True)


def find_mlnode() -> str | None:
    """$MLNODE, else `mlnode` on PATH, else /root/bin/mlnode or ~/bin/mlnode."""
    candidates = [os.environ.get("MLNODE", ""), shutil.which("mlnode") or "",
                  "/root/bin/mlnode", str(Path.home() / "bin" / "mlnode")]  # fmt: skip
    return next((c for c in candidates if c and os.access(c, os.X_OK) and Path(c).is_file()),
                None)  # fmt: skip


# ---------------------------------------------------------------- reading what the nodes saw


_ML_EV = re.compile(r"^EV (\d+(?:\.\d+)?) (join|leave) (\S+) ")
_ML_SUSPECT = re.compile(r"^ML (\d+(?:\.\d+)?) .*Suspect (\S+) has failed")


def parse_mlnode(observer: str, lines: Iterable[str]) -> list[MemberEvent]:
    """mlnode stdout -> member events: join = seen alive, leave = seen dead (memberlist 0.2.2
    does not tell dead from left, and nothing here leaves), a suspicion its own probe raised =
    suspect. Unparsable lines (a torn last line of a killed node) are skipped."""
    out = []
    for line in lines:
        m = _ML_EV.match(line)
        if m:
            status = "alive" if m.group(2) == "join" else "failed"
            out.append(MemberEvent(float(m.group(1)), observer, m.group(3), status))
            continue
        m = _ML_SUSPECT.match(line)
        if m:
            out.append(MemberEvent(float(m.group(1)), observer, m.group(2), "suspect"))
    return [e for e in out if e.peer != observer]


def parse_agora(observer: str, events: Iterable[dict]) -> list[MemberEvent]:
    """An agent's event log -> its member events (wall-clock times, as the agent stamped them)."""
    return [MemberEvent(float(e["t"]), observer, str(e["peer"]), str(e["status"]))
            for e in events if e.get("ev") == "member" and e.get("peer") != observer]


# ---------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    kind: str  # count | s


def rows(ph: Phases) -> list[Row]:
    return [
        Row("crash_detect", "crash, no loss: SIGKILL → all 9 survivors see it dead [s]", "s"),
        Row("loss20_false", f"20 % loss for {ph.loss20:g} s: false failure declarations", "count"),
        Row("loss20_suspect", "20 % loss: suspicions", "count"),
        Row("loss20_after", f"20 % loss: failure declarations in the {ph.rest:g} s after it",
            "count"),
        Row("loss20_recover", "20 % loss: its end → every node sees all 10 alive, for good [s]",
            "s"),
        Row("loss40_false", f"40 % loss for {ph.loss40:g} s: false failure declarations",
            "count"),
        Row("loss40_nodes", "40 % loss: distinct nodes declared failed", "count"),
        Row("loss40_suspect", "40 % loss: suspicions", "count"),
        Row("loss40_after", f"40 % loss: failure declarations in the {ph.after:g} s after it",
            "count"),
        Row("loss40_recover", "40 % loss: its end → every node sees all 10 alive, for good [s]",
            "s"),
        Row("part_first", f"partition 5 | 5 for {ph.partition:g} s: first node of the other "
            "side declared dead [s]", "s"),
        Row("part_all", "partition: every node has declared all of the other side dead [s]",
            "s"),
        Row("part_same", "partition: declarations about same-side nodes", "count"),
        Row("heal_remerge", "heal → every node sees all 10 alive [s]", "s"),
        Row("heal_flaps", f"heal: declarations about nodes that stayed reachable, in the "
            f"{ph.heal:g} s after", "count"),
    ]  # fmt: skip


Marks = dict[str, tuple[float, float]]  # step -> (start, end), wall clock


def _count(members: Sequence[MemberEvent], t0: float, t1: float, status: str,
           keep: Callable[[MemberEvent], bool] = lambda m: True) -> int:  # fmt: skip
    return sum(1 for m in members if m.status == status and t0 <= m.t <= t1 and keep(m))


def _side(node: str) -> int:
    return 0 if int(node[1:]) in SIDES[0] else 1


def figures(members: Sequence[MemberEvent], marks: Marks) -> dict[str, float]:
    """Every row's figure for one system from its nodes' events and the steps' times (a time
    that never came within its step is inf)."""
    nodes = [f"n{i}" for i in range(N)]
    # "sees alive" = holds it as a member (alive or suspect): memberlist reports no refuted
    # suspicion, so a suspect view of it could never end
    views = [m for m in members if m.status != "suspect"]
    out: dict[str, float] = {}
    for name, gap in (("loss20", "rest"), ("loss40", "after")):
        a, b = marks[name]
        _, c = marks[gap]
        out[f"{name}_false"] = _count(members, a, b, "failed")
        out[f"{name}_suspect"] = _count(members, a, b, "suspect")
        out[f"{name}_after"] = _count(members, b, c, "failed", lambda m, b=b: m.t > b)
        out[f"{name}_recover"] = all_alive_from(views, nodes, b, c, for_good=True) - b
        if name == "loss40":
            out["loss40_nodes"] = len({m.peer for m in members
                                       if m.status == "failed" and a <= m.t <= b})  # fmt: skip
    a, b = marks["partition"]
    cross = [m for m in members if m.status == "failed" and a <= m.t <= b
             and _side(m.observer) != _side(m.peer)]  # fmt: skip
    out["part_first"] = min((m.t for m in cross), default=math.inf) - a
    first: dict[tuple[str, str], float] = {}
    for m in cross:
        first.setdefault((m.observer, m.peer), m.t)
    pairs = len(SIDES[0]) * len(SIDES[1]) * 2
    out["part_all"] = max(first.values()) - a if len(first) == pairs else math.inf
    out["part_same"] = _count(members, a, b, "failed",
                              lambda m: _side(m.observer) == _side(m.peer))  # fmt: skip
    h, e = marks["heal"]
    out["heal_remerge"] = all_alive_from(views, nodes, h, e) - h
    out["heal_flaps"] = _count(members, h, e, "failed",
                               lambda m: _side(m.observer) == _side(m.peer))  # fmt: skip
    out["crash_detect"] = _crash_time(members, *marks["crash"])
    return out


def _crash_time(members: Sequence[MemberEvent], k: float, e: float) -> float:
    """From the SIGKILL at k until every survivor had declared the victim dead (inf: not by e)."""
    victim = f"n{VICTIM}"
    seen: dict[str, float] = {}
    for m in members:
        if m.peer == victim and m.status == "failed" and k <= m.t <= e:
            seen.setdefault(m.observer, m.t)
    survivors = [f"n{i}" for i in range(N) if i != VICTIM]
    return max(seen[s] for s in survivors) - k if len(seen) == len(survivors) else math.inf


def _cell(row: Row, v: float, window: float) -> str:
    if math.isinf(v):
        return f"> {window:.0f}"
    return f"{v:.1f}" if row.kind == "s" else f"{int(v)}"


def _ratio(a: float, b: float) -> str:
    if math.isinf(a) or math.isinf(b) or b == 0:
        return "–"
    return f"×{a / b:.2f}"


def _windows(ph: Phases) -> dict[str, float]:
    return {"loss20_recover": ph.rest, "loss40_recover": ph.after, "part_first": ph.partition,
            "part_all": ph.partition, "heal_remerge": ph.heal, "crash_detect": ph.crash}


def render(found: dict[str, dict[str, float]], ph: Phases, quick: bool, wall: float) -> str:
    cmd = f"python -m scenarios.bench.lossy{' --quick' if quick else ''}"
    win = _windows(ph)
    table = ["| step | agora | memberlist | agora ÷ memberlist |", "|:---|---:|---:|---:|"]
    for r in rows(ph):
        a, b = found["agora"][r.key], found["memberlist"][r.key]
        w = win.get(r.key, 0.0)
        label = r.label.replace("|", "\\|")
        table.append(f"| {label} | {_cell(r, a, w)} | {_cell(r, b, w)} | {_ratio(a, b)} |")
    return "\n".join([
        f"### Membership under loss and partition: agora beside memberlist ({N} namespaces)",
        "",
        f"`{cmd}` — {wall:.0f} s wall{' (quick: shortened phases)' if quick else ''}. "
        f"{N} network namespaces on one bridge; in each, one agora agent (default SwimConfig) "
        "and one memberlist node (`mlnode -profile agora`: agora's timings); every fault an "
        "nftables drop on each receiver's INPUT hook, hitting both at once. Steps in this "
        "order, each from the end of the one before; `> N` = not within the step's N s. "
        f"Machine: {describe(with_load=True)}.",
        "",
        *table,
        "",
        "Caveats:",
        "- counts are per observer (a node declared dead by 9 observers counts 9), each "
        "system's own events: agora's `member` events, memberlist's leave callbacks; both "
        "include what a node learned by gossip;",
        "- suspicions are not alike: agora logs every observer's move to suspect, its own or "
        "gossiped; memberlist logs only those its own probes raise;",
        "- both probe and gossip over UDP and exchange full state over TCP (agora: ZeroMQ, "
        "where loss becomes retransmission delay and a partition messages queued for the "
        "heal; agora drops a suspected peer's queue); agora's datagrams are plain here (no "
        "cluster key), as memberlist's are;",
        "- memberlist alone does not probe members it declared dead, so two sides that "
        "declared each other dead stay apart (Serf, above it, adds a reconnect loop, as "
        "agora's `reconnect_interval` is): its heal row shows that, not a slow merge;",
        "- memberlist fixes Lifeguard's confirmations at SuspicionMult − 2 = 1 (agora 3);",
        f"- 2 × {N} processes share this machine's cores, which adds latency to both;",
        "- one run of random drops: figures vary from run to run; rerun to see the spread.",
        "",
    ])


def skipped(why: str) -> str:
    return f"### Membership under loss and partition: agora beside memberlist\n\nNot run: {why}.\n"


# ---------------------------------------------------------------- running it


class _Bed:
    """The network and the 2 x N processes; `close()` removes everything."""

    def __init__(self, mlnode: str, workdir: Path) -> None:
        from scenarios.run_local import STATE_DIR

        self.mlnode = mlnode
        self.dir = workdir
        self.net = netns.NamespacedNetwork(secrets.token_hex(3), N)
        self.agora: list[subprocess.Popen | None] = [None] * N
        self.ml: list[subprocess.Popen | None] = [None] * N
        self.state = STATE_DIR / f"{os.getpid()}-{self.net.run_id}.json"

    def _save_state(self) -> None:
        """The local scenario runner's state file: a concurrent run keeps this network, and
        the next run removes it (and its agents) if this process was SIGKILLed."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        pids = [p.pid for p in self.agora if p is not None]
        self.state.write_text(json.dumps({"runner": os.getpid(), "agents": pids,
                                          "network": self.net.run_id}))  # fmt: skip

    def addr(self, i: int) -> str:
        return f"tcp://{self.net.host_addr(i)}:{AGORA_PORT}"

    def _spawn(self, i: int, argv: list[str], out: Path, env: dict[str, str] | None = None,
               ) -> subprocess.Popen:  # fmt: skip
        with out.open("ab") as f:
            return subprocess.Popen(self.net.exec_argv(i, argv), stdin=subprocess.DEVNULL,
                                    stdout=f, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(REPO_ROOT), start_new_session=True)  # fmt: skip

    def start_agora(self, i: int) -> None:
        cfg = self.dir / f"n{i}.toml"
        seeds = [self.addr(j) for j in range(3) if j != i]
        write_config(cfg, {"node_id": f"n{i}", "bind": self.addr(i), "join": seeds,
                           "join_timeout": START_TIMEOUT, "log_level": "WARNING",
                           "forecaster": "none", "event_log": str(self.events(i))},
                     {"resources": {"cpus": 2.0, "memory": 2 << 30},
                      "placement": {"policy": "least-loaded"}})  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT) + (
            os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
        argv = [sys.executable, "-m", "deploy.cli", "agent", "--config", str(cfg)]
        self.agora[i] = self._spawn(i, argv, self.dir / f"n{i}.log", env)
        self._save_state()

    def start_ml(self, i: int) -> None:
        host = self.net.host_addr(i)
        argv = [self.mlnode, "-name", f"n{i}", "-host", host, "-port", str(ML_PORT),
                "-profile", "agora", "-join-timeout", f"{START_TIMEOUT:.0f}s"]  # fmt: skip
        if i:
            argv += ["-join", f"{self.net.host_addr(0)}:{ML_PORT}"]
        self.ml[i] = self._spawn(i, argv, self.ml_out(i))

    def events(self, i: int) -> Path:
        return self.dir / f"n{i}.events.jsonl"

    def ml_out(self, i: int) -> Path:
        return self.dir / f"n{i}.mlnode.out"

    def start(self) -> None:
        self._save_state()  # before the network exists: a concurrent run must keep it
        self.net.create()
        self.start_ml(0)
        self.start_agora(0)
        self.wait(lambda: self._answers(0) and self._ml_ready(0), "node n0 to start")
        for i in range(1, N):
            self.start_ml(i)
            self.start_agora(i)
        self.wait(self.converged, f"both clusters to see all {N} alive")

    def wait(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not cond():
            for i, p in enumerate(self.agora + self.ml):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"a process of node n{i % N} exited with {p.returncode} "
                                       f"while waiting for {what} (logs: {self.dir})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {START_TIMEOUT:.0f} s waiting for {what}")
            time.sleep(0.5)

    def _answers(self, i: int) -> bool:
        try:
            query(self.addr(i), "stats", QUERY_TIMEOUT)
            return True
        except ClientError:
            return False

    def _ml_ready(self, i: int) -> bool:
        path = self.ml_out(i)
        return path.exists() and "READY " in path.read_text(errors="replace")

    def converged(self) -> bool:
        want = {f"n{i}" for i in range(N)}
        for i in range(N):
            try:
                got = {r["node"] for r in query(self.addr(i), "members", QUERY_TIMEOUT)
                       if r["status"] == "alive"}  # fmt: skip
            except ClientError:
                return False
            if got != want:
                return False
        last: dict[tuple[str, str], str] = {}
        for m in self.members()["memberlist"]:
            if m.status != "suspect":  # memberlist reports no refuted suspicion
                last[(m.observer, m.peer)] = m.status
        return len(last) == N * (N - 1) and all(s == "alive" for s in last.values())

    def members(self) -> dict[str, list[MemberEvent]]:
        ag: list[MemberEvent] = []
        ml: list[MemberEvent] = []
        for i in range(N):
            if self.events(i).exists():
                ag += parse_agora(f"n{i}", read_events(self.events(i)))
            if self.ml_out(i).exists():
                ml += parse_mlnode(f"n{i}", self.ml_out(i).read_text(errors="replace")
                                   .splitlines())  # fmt: skip
        return {"agora": sorted(ag, key=lambda m: m.t), "memberlist": sorted(ml, key=lambda m: m.t)}

    def loss(self, percent: int) -> float:
        for i in range(N):
            self.net.set_loss(i, percent)
        return time.time()

    def crash(self, i: int) -> float:
        """SIGKILL both systems' node i (agora's first, then memberlist's, at once)."""
        for p in (self.agora[i], self.ml[i]):
            if p is not None and p.poll() is None:
                p.kill()
        t = time.time()
        for p in (self.agora[i], self.ml[i]):
            if p is not None:
                p.wait()
        return t

    def close(self) -> None:
        """SIGKILL every process (the figures are read already), then remove the network."""
        try:
            for p in self.agora + self.ml:
                if p is not None and p.poll() is None:
                    p.kill()
                if p is not None:
                    p.wait()
        finally:
            self.net.destroy()  # and whatever might still run inside its namespaces
            self.state.unlink(missing_ok=True)


def _crash(bed: _Bed, ph: Phases) -> tuple[float, float]:
    """SIGKILL node n{VICTIM} of both systems, wait until both clusters saw it (or ph.crash),
    restart both and wait until both have converged again."""
    _progress(f"SIGKILL of node n{VICTIM} (both systems); up to {ph.crash:g} s to see it")
    k = bed.crash(VICTIM)
    while time.time() < k + ph.crash:
        time.sleep(1.0)
        found = bed.members()
        if all(math.isfinite(_crash_time(found[s], k, time.time())) for s in SYSTEMS):
            break
    e = time.time()
    _progress(f"restarting node n{VICTIM} (both systems)")
    bed.start_ml(VICTIM)
    bed.start_agora(VICTIM)
    bed.wait(bed.converged, f"both clusters to see all {N} alive again")
    return k, e


def _play(bed: _Bed, ph: Phases) -> Marks:
    """The timeline; returns each step's (start, end) wall-clock times."""
    marks: Marks = {}
    time.sleep(ph.settle)
    marks["crash"] = _crash(bed, ph)
    time.sleep(ph.settle)
    for name, rate, hold, gap, rest in (("loss20", 20, ph.loss20, "rest", ph.rest),
                                        ("loss40", 40, ph.loss40, "after", ph.after)):
        _progress(f"{rate} % loss on every host for {hold:g} s")
        a = bed.loss(rate)
        time.sleep(hold)
        b = bed.loss(0)
        _progress(f"no loss for {rest:g} s")
        time.sleep(rest)
        marks[name], marks[gap] = (a, b), (b, time.time())
    _progress(f"partition {len(SIDES[0])} | {len(SIDES[1])} for {ph.partition:g} s")
    bed.net.partition([list(s) for s in SIDES])
    a = time.time()
    time.sleep(ph.partition)
    bed.net.heal()
    h = time.time()
    marks["partition"] = (a, h)
    _progress(f"healed; {ph.heal:g} s to re-merge")
    time.sleep(ph.heal)
    marks["heal"] = (h, time.time())
    return marks


def run(quick: bool = False, keep: Path | None = None) -> str:
    """The markdown section (one line instead when it cannot run here); with `keep`, every
    node's config, log, event log and mlnode output is left in that folder."""
    ok, why = netns.available()
    if not ok:
        return skipped(why)
    mlnode = find_mlnode()
    if mlnode is None:
        return skipped("mlnode not found ($MLNODE, PATH, /root/bin, ~/bin); build it as "
                       "../shared/peers/memberlist/README.md says")
    busy = netns.leftovers()
    if busy:
        return skipped(f"another namespaced run holds the network ({', '.join(busy[:3])}...)")
    ph = QUICK if quick else FULL
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agora-bench-lossy-") as tmp:
        workdir = Path(tmp) if keep is None else keep
        workdir.mkdir(parents=True, exist_ok=True)
        bed = _Bed(mlnode, workdir)
        try:
            _progress(f"starting {N} agora agents and {N} memberlist nodes in {N} namespaces")
            bed.start()
            _progress(f"both clusters converged after {time.monotonic() - t0:.1f} s")
            marks = _play(bed, ph)
            found = bed.members()
        finally:
            bed.close()
    results = {s: figures(found[s], marks) for s in SYSTEMS}
    return render(results, ph, quick, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.lossy",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="shorter phases (30 s of each loss), for a fast look")  # fmt: skip
    p.add_argument("--keep-logs", metavar="DIR", type=Path,
                   help="leave every node's config, logs and event files in DIR")  # fmt: skip
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    print(run(args.quick, args.keep_logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
