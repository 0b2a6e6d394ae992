"""Real network isolation for local scenario runs: one Linux network namespace per agent.

Why: loopback agents share one address and one kernel stack, so a "partition" or "loss" can only
be faked inside our own transport, which is the very code under test. Here every agent runs in
its own namespace with its own address on one bridge, binds the same port as on a real node, and
faults are kernel packet filters (nftables) that the agent cannot see or bypass — Jepsen style.

Layout made by `NamespacedNetwork(run_id, n).create()`::

    root namespace: bridge agsc{run_id}br, address 198.18.255.254/16 (the gateway: where the
                    runner's client queries come from), one veth end agsc{run_id}h{i} per host
    namespace agsc-{run_id}-{i}: lo up, eth0 (the other veth end) 198.18.0.{i+1}/16,
                    nftables table `inet agora`: base chain `input` (hook input, priority 0,
                    policy accept) jumping to the regular chains `partition` and `loss`

Every fault is a `drop` on the receiver's INPUT hook, so it is silent loss as on a wire: a drop
on OUTPUT makes the sender's `sendto()` fail at once with EPERM, which a datagram protocol sees
as a local error instead of loss. `partition` and `loss` are separate chains, each flushed on
its own, so healing a partition keeps the loss and changing the loss keeps the partition.
Faults match IPv4 only (the hosts have no other addresses than IPv6 link-local ones) and never
match the gateway, so the runner's queries are never lossy or partitioned.

Bridged traffic and the root firewall: where the kernel's br_netfilter is loaded (it is on these
machines: `net.bridge.bridge-nf-call-iptables = 1`, and every new namespace starts with 1 too),
frames bridged between two hosts also traverse the *root* namespace's IPv4 `forward` hook. An
empty root ruleset (as here) lets them pass; a root forward chain with policy drop (e.g. Docker's)
silently cuts host<->host traffic while gateway<->host still works. The per-bridge option
`nf_call_iptables 0` does not help: the kernel ORs it with the sysctl. This module must not change
the root namespace's firewall or sysctls, so `create()` only logs a warning when it sees such a
chain in the root nftables ruleset (iptables-legacy rules are invisible to it).

Only one network at a time can own 198.18.0.0/16 in the root namespace (both bridges would carry
the same route), so `create()` refuses when any root address is already in that range. After a
runner was SIGKILLed, `cleanup_leftovers()` kills what still runs in `agsc-*` namespaces and
removes them with every `agsc*` link.

Needs root, `ip` (iproute2) and `nft` (nftables); `available()` says whether they work here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

PREFIX = "agsc"
"""Every namespace, link and bridge this module makes starts with this (and nothing else does)."""
SUBNET = "198.18.0.0/16"
"""The benchmarking range (RFC 2544): no address outside it is ever touched."""
GATEWAY = "198.18.255.254"
MAX_HOSTS = 250
TABLE = "agora"
HOST_IFNAME = "eth0"
"""Name of the veth end inside each namespace (the host's only wire)."""

_RUN_ID = re.compile(r"[a-z0-9]{1,6}")
_CMD_TIMEOUT = 30.0
_KILL_WAIT = 5.0
_VETH_WAIT = 3.0
_PARALLEL = 16
_NET = ipaddress.ip_network(SUBNET)
_PREFIXLEN = _NET.prefixlen
assert ipaddress.ip_address(GATEWAY) in _NET


class NetnsError(Exception):
    """An `ip`/`nft` call failed (message: the command and its stderr, on one line)."""


# ---------------------------------------------------------------------------- running commands


def _one_line(text: str) -> str:
    """Join stderr's lines into one, dropping nft's caret-only marker lines."""
    lines = [ln.strip() for ln in text.splitlines()]
    return " | ".join(ln for ln in lines if ln.strip("^ "))


def _run(argv: list[str], stdin: str | None = None) -> str:
    """Run one command, return its stdout; any failure becomes a one-line NetnsError.

    For `ip -batch -` the failing input line is named, since ip only reports its number.
    """
    log.debug("run %s%s", " ".join(argv), f" <<< {stdin!r}" if stdin else "")
    cmd = " ".join(argv)
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=_CMD_TIMEOUT, check=False
        )
    except FileNotFoundError as e:
        raise NetnsError(f"`{cmd}` failed: {argv[0]} not found ({e})") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{cmd}` failed: no answer in {_CMD_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        err = _one_line(done.stderr) or f"exit status {done.returncode}"
        where = ""
        m = re.search(r"Command failed -:(\d+)", done.stderr)
        if m and stdin is not None:
            lines = stdin.splitlines()
            k = int(m.group(1))
            if 1 <= k <= len(lines):
                where = f" at `{lines[k - 1]}`"
        raise NetnsError(f"`{cmd}` failed{where}: {err}")
    return done.stdout


def _ip_batch(lines: list[str], netns: str | None = None, force: bool = False) -> None:
    """Many `ip` commands in one process: one fork instead of one per command."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else [])
    _run([*argv, "-batch", "-"], "\n".join(lines) + "\n")


def _nft_argv(netns: str) -> list[str]:
    """Runs the nft script on stdin atomically (one transaction) inside a namespace."""
    return ["ip", "netns", "exec", netns, "nft", "-f", "-"]


def _nft(netns: str, script: str) -> str:
    return _run(_nft_argv(netns), script)


def _namespaces() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    out = _run(["ip", "netns", "list"])
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def _root_links(kind: str | None = None) -> list[str]:
    """Names of the links (of one type, e.g. "veth") in the root namespace, without `@peer`."""
    out = _run(["ip", "-o", "link", "show"] + (["type", kind] if kind else []))
    names = []
    for ln in out.splitlines():
        parts = ln.split(": ", 2)
        if len(parts) >= 2:
            names.append(parts[1].split("@", 1)[0])
    return names


def _ns_pids(netns: str) -> list[int]:
    """Processes whose network namespace is `netns`; [] if it is already gone."""
    try:
        out = _run(["ip", "netns", "pids", netns])
    except NetnsError:
        return []
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _alive(pid: int) -> bool:
    """True while pid runs; a zombie counts as gone (it no longer holds its namespaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _kill_all(pids: list[int]) -> list[int]:
    """SIGKILL pids and wait until they are gone: a namespace lives on while a process is in it."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _KILL_WAIT
    waiting = [p for p in pids if _alive(p)]
    while waiting and time.monotonic() < deadline:
        time.sleep(0.01)
        waiting = [p for p in waiting if _alive(p)]
    if waiting:
        raise NetnsError(f"processes {waiting} still alive {_KILL_WAIT:.0f} s after SIGKILL")
    return pids


def _remove(namespaces: list[str], links: list[str]) -> list[str]:
    """Kill what runs in the namespaces, delete them, then delete the links still left.

    Namespaces go first: the kernel tears them down asynchronously and in batches, taking their
    veth pairs along, a moment *after* `ip netns del` returns. Deleting veths one by one instead
    costs an RCU grace period (~20 ms here) each: 5 s for 250 hosts. So wait (briefly) for those
    veth ends to vanish, then delete bridges and stragglers explicitly, then check.
    """
    if not namespaces and not links:
        return []
    inside = {ns: _ns_pids(ns) for ns in namespaces}
    pids = [pid for ns_pids in inside.values() for pid in ns_pids]
    if pids:
        busy = ", ".join(ns for ns, ns_pids in inside.items() if ns_pids)
        log.warning("killing %d process(es) still inside %s", len(pids), busy)
        _kill_all(pids)
    errors: list[str] = []

    def batch(lines: list[str]) -> None:
        try:
            _ip_batch(lines, force=True)  # -force: carry on past one that vanished meanwhile
        except NetnsError as e:
            errors.append(str(e))

    wanted = set(links)
    if namespaces:
        batch([f"netns del {ns}" for ns in namespaces])
        deadline = time.monotonic() + _VETH_WAIT
        while wanted & set(_root_links("veth")) and time.monotonic() < deadline:
            time.sleep(0.01)
    rest = wanted & set(_root_links())
    if rest:
        batch([f"link del dev {name}" for name in sorted(rest)])
    left = set(namespaces) & set(_namespaces()) | wanted & set(_root_links())
    if left:
        raise NetnsError(f"could not remove {sorted(left)}: {'; '.join(errors) or 'still there'}")
    return namespaces + links


def _run_many(jobs: list[tuple[list[str], str | None]]) -> list[BaseException | None]:
    """Run independent commands (one per namespace) concurrently; each job's error or None.

    Why: each nftables or link change waits in the kernel for an RCU grace period (~15-20 ms
    here), mostly idle time. One namespace after another, a partition of 250 hosts would take
    seconds to form or heal; concurrently the waits overlap.
    """
    if len(jobs) <= 1:
        out: list[BaseException | None] = []
        for argv, stdin in jobs:
            try:
                _run(argv, stdin)
                out.append(None)
            except NetnsError as e:
                out.append(e)
        return out
    with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(jobs))) as pool:
        futures = [pool.submit(_run, argv, stdin) for argv, stdin in jobs]
    return [f.exception() for f in futures]


def _raise_first(errors: list[BaseException | None]) -> None:
    """Raise the first error of _run_many (saying how many more failed), if any."""
    failed = [e for e in errors if e is not None]
    if not failed:
        return
    if not isinstance(failed[0], NetnsError):
        raise failed[0]
    more = f" (and {len(failed) - 1} more command(s) failed)" if len(failed) > 1 else ""
    raise NetnsError(f"{failed[0]}{more}") from None


# ---------------------------------------------------------------------------- public helpers


def available() -> tuple[bool, str]:
    """(True, "") if namespaces, veths, bridges and nftables work here, else (False, why).

    Checked for real in a throwaway namespace (deleted again), because a container can have
    root, `ip` and `nft` and still refuse `ip netns add` or lack nf_tables.
    """
    if os.geteuid() != 0:
        return False, "needs root (network namespaces and nftables)"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return False, f"needs `{tool}` (apt-get install {pkg})"
    probe = f"{PREFIX}-available-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except NetnsError as e:
        return False, f"network namespaces not permitted: {e}"
    try:
        _ip_batch(["link add pa type veth peer name pb", "link add pbr type bridge"], netns=probe)
        _nft(probe, f"add table inet {TABLE}\n")
    except NetnsError as e:
        return False, f"veth/bridge/nftables not usable in a namespace: {e}"
    finally:
        try:
            _run(["ip", "netns", "del", probe])
        except NetnsError as e:
            log.warning("could not delete probe namespace %s: %s", probe, e)
    return True, ""


def leftovers() -> list[str]:
    """Namespaces and root links starting with PREFIX that exist now (should be [] when idle)."""
    return [ns for ns in _namespaces() if ns.startswith(PREFIX)] + [
        name for name in _root_links() if name.startswith(PREFIX)
    ]


def owned_by(name: str, run_ids: set[str]) -> bool:
    """Whether a namespace (agsc-{id}-{i}) or root link (agsc{id}br, agsc{id}h{i}) belongs to
    one of the networks `run_ids`."""
    rest = name[len(PREFIX):]
    if rest.startswith("-"):
        return rest[1:].rsplit("-", 1)[0] in run_ids
    return any(rest == f"{r}br" or re.fullmatch(rf"{r}h\d+", rest) for r in run_ids)


def cleanup_leftovers(keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Remove every `agsc-*` namespace (killing what runs inside) and every `agsc*` root link,
    except those of the networks in `keep` (runs still going: removing them used to cut a
    running experiment off mid-way when a second one started).

    For the start of a run after an earlier runner was SIGKILLed and could not destroy its
    network. Returns the names removed.
    """
    removed = _remove(
        [ns for ns in _namespaces() if ns.startswith(f"{PREFIX}-") and not owned_by(ns, keep)],
        [name for name in _root_links() if name.startswith(PREFIX) and not owned_by(name, keep)],
    )
    if removed:
        log.info("removed leftover network pieces: %s", ", ".join(removed))
    return removed


def _warn_if_root_filters_bridge() -> None:
    """Warn when the root firewall may drop traffic bridged between two hosts (see module doc)."""
    try:
        call_iptables = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip()
    except OSError:
        call_iptables = "0"  # br_netfilter not loaded: bridged frames skip the IP hooks
    try:
        chains = json.loads(_run(["nft", "-j", "list", "chains"])).get("nftables", [])
    except (NetnsError, ValueError):
        return
    for item in chains:
        chain = item.get("chain")
        if not chain or chain.get("hook") != "forward" or chain.get("policy") != "drop":
            continue
        family = chain.get("family")
        if family == "bridge" or (family in ("ip", "inet") and call_iptables == "1"):
            log.warning(
                "root chain %s %s %s (hook forward, policy drop) may drop traffic between "
                "namespaced hosts (net.bridge.bridge-nf-call-iptables=%s)",
                family, chain.get("table"), chain.get("name"), call_iptables,
            )  # fmt: skip


# ---------------------------------------------------------------------------- the network


class NamespacedNetwork:
    """n hosts, each a network namespace with one address, joined by one bridge.

    Use as a context manager (create on enter, destroy on exit), or call create()/destroy().
    Fault methods change nftables rules inside the hosts' namespaces, several namespaces at a
    time, not atomically across them: a partition of 3 hosts forms within ~10 ms, one of 250
    within ~0.8 s on this 2-core machine, and is asymmetric meanwhile.
    """

    def __init__(self, run_id: str, n: int) -> None:
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise NetnsError(f"run_id must be 1 to 6 characters [a-z0-9], not {run_id!r}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_HOSTS:
            raise NetnsError(f"n must be an int in 1..{MAX_HOSTS}, not {n!r}")
        self.run_id = run_id
        self.n = n
        self.gateway: str = GATEWAY
        self.bridge = f"{PREFIX}{run_id}br"
        self._claimed = False  # True once we own the names (checked free) until destroy()
        self._loss: dict[int, int] = {}  # host -> whole percent currently dropped
        self._blocked: list[frozenset[int]] = [frozenset()] * n  # host -> hosts it drops

    # ---------------------------------------------------------------- names and addresses

    def _check(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.n:
            raise ValueError(f"host index must be in 0..{self.n - 1}, not {i!r}")
        return i

    def ns_name(self, i: int) -> str:
        return f"{PREFIX}-{self.run_id}-{self._check(i)}"

    def veth_name(self, i: int) -> str:
        """Root-namespace end of host i's veth pair (<= 15 characters, the kernel's IFNAMSIZ)."""
        return f"{PREFIX}{self.run_id}h{self._check(i)}"

    def host_addr(self, i: int) -> str:
        return str(_NET.network_address + self._check(i) + 1)

    def addrs(self) -> list[str]:
        return [self.host_addr(i) for i in range(self.n)]

    def exec_argv(self, i: int, argv: list[str]) -> list[str]:
        """argv run inside host i; `ip netns exec` execs in place, so a Popen pid is argv's."""
        return ["ip", "netns", "exec", self.ns_name(i), *argv]

    def _names(self) -> tuple[list[str], list[str]]:
        namespaces = [self.ns_name(i) for i in range(self.n)]
        return namespaces, [self.veth_name(i) for i in range(self.n)] + [self.bridge]

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> NamespacedNetwork:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def create(self) -> None:
        """Make the bridge, the namespaces, their veths, addresses and nftables tables.

        Refuses (before making anything) when a name is taken or the root namespace already has
        an address in SUBNET; if a later step fails, removes what it made, then raises.
        """
        if self._claimed:
            raise NetnsError(f"network {self.run_id!r} already created")
        namespaces, links = self._names()
        taken = sorted(set(namespaces) & set(_namespaces()) | set(links) & set(_root_links()))
        if taken:
            raise NetnsError(
                f"names already in use: {', '.join(taken)} (destroy that network or run "
                "cleanup_leftovers())"
            )
        in_use = _run(["ip", "-o", "-4", "addr", "show", "to", SUBNET]).strip()
        if in_use:
            raise NetnsError(
                f"root namespace already has an address in {SUBNET}: {_one_line(in_use)}"
            )
        self._claimed = True
        t0 = time.monotonic()
        try:
            root = [f"netns add {ns}" for ns in namespaces] + [
                f"link add {self.bridge} type bridge stp_state 0 forward_delay 0",
                f"addr add {GATEWAY}/{_PREFIXLEN} dev {self.bridge}",
                f"link set {self.bridge} up",
            ]
            for i, ns in enumerate(namespaces):
                veth = self.veth_name(i)
                root.append(f"link add {veth} type veth peer name {HOST_IFNAME} netns {ns}")
                root.append(f"link set {veth} master {self.bridge} up")
            _ip_batch(root)
            jobs: list[tuple[list[str], str | None]] = []
            for i, ns in enumerate(namespaces):
                inside = ["link set lo up",
                          f"addr add {self.host_addr(i)}/{_PREFIXLEN} dev {HOST_IFNAME}",
                          f"link set {HOST_IFNAME} up"]  # fmt: skip
                jobs.append((["ip", "-n", ns, "-batch", "-"], "\n".join(inside) + "\n"))
                jobs.append((_nft_argv(ns), _TABLE_SCRIPT))
            _raise_first(_run_many(jobs))
        except BaseException:
            log.warning("create() of network %r failed; removing what it made", self.run_id)
            try:
                self.destroy()
            except NetnsError as e:
                log.error("cleanup after failed create() failed too: %s", e)
            raise
        log.info(
            "network %r: %d host(s) %s..%s on bridge %s, gateway %s (%.2f s)",
            self.run_id, self.n, self.host_addr(0), self.host_addr(self.n - 1), self.bridge,
            GATEWAY, time.monotonic() - t0,
        )  # fmt: skip
        _warn_if_root_filters_bridge()

    def destroy(self) -> None:
        """Remove everything this network made; kills processes still inside its namespaces.

        Idempotent and safe after a partial create(): removes whichever of its names exist.
        Does nothing if create() never claimed the names (they belong to someone else then).
        """
        if not self._claimed:
            return
        namespaces, links = self._names()
        existing_ns = set(_namespaces())
        existing_links = set(_root_links())
        _remove(
            [ns for ns in namespaces if ns in existing_ns],
            [name for name in links if name in existing_links],
        )
        self._claimed = False
        self._loss.clear()
        self._blocked = [frozenset()] * self.n
        log.info("network %r destroyed", self.run_id)

    # ---------------------------------------------------------------- faults

    def _require_created(self) -> None:
        if not self._claimed:
            raise NetnsError(f"network {self.run_id!r} is not created")

    def set_loss(self, i: int, percent: float) -> None:
        """Host i silently drops that share of IPv4 packets arriving from other hosts.

        Packets from the gateway are never dropped (the runner's queries must get through).
        nftables draws `numgen random mod 100` per packet, so the share is a whole percent:
        percent is rounded half up (0.4 -> 0, 12.5 -> 13); 0 removes the loss, 100 drops all.
        """
        self._require_created()
        self._check(i)
        if not isinstance(percent, int | float) or math.isnan(percent) or not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be in 0..100, not {percent!r}")
        k = int(percent + 0.5)
        script = f"flush chain inet {TABLE} loss\n"
        if k > 0:
            # numgen yields 0..99 and nft refuses `< 100` as out of range: 100 % is a plain drop
            chance = f"numgen random mod 100 < {k} " if k < 100 else ""
            script += (
                f'add rule inet {TABLE} loss iifname "{HOST_IFNAME}" '
                f"ip saddr != {GATEWAY} {chance}drop\n"
            )
        _nft(self.ns_name(i), script)
        if k:
            self._loss[i] = k
        else:
            self._loss.pop(i, None)
        log.info("network %r: host %d loss %d %%", self.run_id, i, k)

    def partition(self, groups: list[list[int]]) -> None:
        """Every host drops IPv4 packets from hosts of other groups; replaces an earlier partition.

        Hosts named in no group form one more group together. The gateway stays reachable
        from every group. Loss rules are kept.
        """
        self._require_created()
        group_of: dict[int, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                self._check(i)
                if i in group_of:
                    raise ValueError(f"host {i} is in more than one group: {groups!r}")
                group_of[i] = g
        rest = len(groups)
        of = [group_of.get(i, rest) for i in range(self.n)]
        blocked = [frozenset(j for j in range(self.n) if of[j] != of[i]) for i in range(self.n)]
        self._apply_partition(blocked)
        log.info("network %r: partition %s", self.run_id, _groups(of))

    def heal(self) -> None:
        """Remove the partition (loss rules stay)."""
        self._require_created()
        self._apply_partition([frozenset()] * self.n)
        log.info("network %r: partition healed", self.run_id)

    def _apply_partition(self, blocked: list[frozenset[int]]) -> None:
        """Rewrite the partition chain of every host whose blocked set changes (only those)."""
        hosts = [i for i in range(self.n) if blocked[i] != self._blocked[i]]
        jobs: list[tuple[list[str], str | None]] = []
        for i in hosts:
            script = f"flush chain inet {TABLE} partition\n"
            if blocked[i]:
                addrs = ", ".join(self.host_addr(j) for j in sorted(blocked[i]))
                script += f"add rule inet {TABLE} partition ip saddr {{ {addrs} }} drop\n"
            jobs.append((_nft_argv(self.ns_name(i)), script))
        errors = _run_many(jobs)
        for i, error in zip(hosts, errors, strict=True):
            if error is None:
                self._blocked[i] = blocked[i]
        _raise_first(errors)

    def clear_faults(self) -> None:
        """Remove every fault rule (loss and partition) in every namespace."""
        self._require_created()
        script = f"flush chain inet {TABLE} loss\nflush chain inet {TABLE} partition\n"
        errors = _run_many([(_nft_argv(self.ns_name(i)), script) for i in range(self.n)])
        for i, error in enumerate(errors):
            if error is None:
                self._blocked[i] = frozenset()
                self._loss.pop(i, None)
        _raise_first(errors)
        log.info("network %r: faults cleared", self.run_id)

    def rules(self, i: int) -> str:
        """`nft list table inet agora` inside host i, for reports and tests."""
        return _run(["ip", "netns", "exec", self.ns_name(i), "nft", "list", "table", "inet", TABLE])

    def loss(self) -> dict[int, int]:
        """host -> whole percent of loss now in force (hosts without loss left out)."""
        return dict(self._loss)


def _groups(of: list[int]) -> list[list[int]]:
    """Host lists per group id, for logging a partition."""
    out: dict[int, list[int]] = {}
    for i, g in enumerate(of):
        out.setdefault(g, []).append(i)
    return list(out.values())


_TABLE_SCRIPT = f"""\
table inet {TABLE} {{
    chain partition {{
    }}
    chain loss {{
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        jump partition
        jump loss
    }}
}}
"""
"""Made in every host: faults go into `partition` and `loss`, each flushed on its own."""
