"""Real namespaced networks: connectivity, partitions, loss, and cleanup after a crash.

These make real namespaces, veths, a bridge and nftables rules, so they need root, `ip` and
`nft`; they are skipped elsewhere (CI runs them as root). Every test uses its own run_id and
removes what it made even when it fails.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from scenarios import netns
from scenarios.netns import (
    GATEWAY,
    PREFIX,
    NamespacedNetwork,
    NetnsError,
    available,
    cleanup_leftovers,
    leftovers,
)

_OK, _WHY = available()
pytestmark = [
    pytest.mark.skipif(not _OK, reason="needs root + `ip` (iproute2) + `nft` (nftables) + "
                       f"network namespaces: {_WHY}"),  # fmt: skip
    # one namespaced network at a time on a machine: such tests take turns (tests/conftest.py)
    pytest.mark.usefixtures("netns_turn"),
]

PORT = 7000
BLOCKED_TIMEOUT = 0.5  # a connect that gets no answer in this long counts as blocked

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""

PROBE = """
import socket, sys
kind, addr, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    if kind == "tcp":
        socket.create_connection((addr, port), timeout=timeout).close()
    else:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (addr, port))
    print("ok")
except TimeoutError:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"""


def _run_id() -> str:
    return "t" + uuid.uuid4().hex[:5]


def _ours(net: NamespacedNetwork) -> list[str]:
    return [name for name in leftovers() if net.run_id in name]


@pytest.fixture
def make_net() -> Iterator[Callable[..., NamespacedNetwork]]:
    """Creates networks (with a TCP listener on PORT in every host) and always destroys them."""
    made: list[NamespacedNetwork] = []
    servers: list[subprocess.Popen[str]] = []

    def make(n: int = 3, listen: bool = True) -> NamespacedNetwork:
        net = NamespacedNetwork(_run_id(), n)
        made.append(net)
        net.create()
        if listen:
            for i in range(n):
                argv = net.exec_argv(i, [sys.executable, "-I", "-S", "-c", SERVER, str(PORT)])
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                servers.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return net

    try:
        yield make
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        for net in made:
            net.destroy()
            assert _ours(net) == []


def probe(net: NamespacedNetwork, src: int, dst: int, kind: str = "tcp") -> str:
    """Connect (tcp) or send a datagram (udp) from inside host src to host dst."""
    argv = [sys.executable, "-I", "-S", "-c", PROBE, kind, net.host_addr(dst), str(PORT),
            str(BLOCKED_TIMEOUT)]  # fmt: skip
    done = subprocess.run(
        net.exec_argv(src, argv), capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def from_gateway(net: NamespacedNetwork, dst: int) -> str:
    """Connect from the root namespace, explicitly from the gateway address (as the runner)."""
    try:
        socket.create_connection(
            (net.host_addr(dst), PORT), timeout=BLOCKED_TIMEOUT, source_address=(GATEWAY, 0)
        ).close()
        return "ok"
    except TimeoutError:
        return "timeout"


def test_bad_arguments_raise() -> None:
    for run_id in ["", "ABC", "toolong", "a-b", "a_b", 7]:
        with pytest.raises(NetnsError):
            NamespacedNetwork(run_id, 3)  # type: ignore[arg-type]
    for n in [0, 251, True, 2.0]:
        with pytest.raises(NetnsError):
            NamespacedNetwork("ok1", n)  # type: ignore[arg-type]


def test_layout_and_connectivity(make_net: Callable[..., NamespacedNetwork]) -> None:
    net = make_net(3)
    rid = net.run_id
    assert [net.ns_name(i) for i in range(3)] == [f"{PREFIX}-{rid}-{i}" for i in range(3)]
    assert [net.host_addr(i) for i in range(3)] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert net.gateway == "198.18.255.254"
    assert net.exec_argv(1, ["true"]) == ["ip", "netns", "exec", f"{PREFIX}-{rid}-1", "true"]
    links = [name for name in _ours(net) if not name.startswith(f"{PREFIX}-")]
    assert sorted(links) == sorted([f"{PREFIX}{rid}br"] + [net.veth_name(i) for i in range(3)])
    assert max(len(name) for name in links) <= 15
    table = net.rules(0)
    for part in ["table inet agora", "chain input", "hook input", "jump partition", "jump loss"]:
        assert part in table
    assert probe(net, 0, 1) == "ok"
    assert probe(net, 2, 1) == "ok"
    for i in range(3):
        assert from_gateway(net, i) == "ok"


def test_exec_argv_pid_is_the_process_in_the_namespace(
    make_net: Callable[..., NamespacedNetwork],
) -> None:
    net = make_net(2, listen=False)
    proc = subprocess.Popen(net.exec_argv(1, ["sleep", "60"]))
    try:
        deadline = time.monotonic() + 5.0
        while True:  # `ip netns exec` enters the namespace a moment after it starts
            out = subprocess.run(["ip", "netns", "identify", str(proc.pid)], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
            if out or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert out == net.ns_name(1)
    finally:
        proc.kill()
        proc.wait()


def test_partition_then_heal(make_net: Callable[..., NamespacedNetwork]) -> None:
    net = make_net(3)
    net.partition([[0], [1, 2]])
    assert probe(net, 0, 1) == "timeout"  # silent: no refusal, no local EPERM
    assert probe(net, 1, 0) == "timeout"
    assert probe(net, 1, 2) == "ok"
    assert from_gateway(net, 0) == "ok"
    net.partition([[0, 1]])  # replaces the earlier one; host 2 forms the rest group
    assert probe(net, 0, 1) == "ok"
    assert "198.18.0.3" in net.rules(0) and "198.18.0.2" not in net.rules(0)
    net.heal()
    assert probe(net, 0, 1) == "ok"
    assert probe(net, 2, 0) == "ok"
    with pytest.raises(ValueError):
        net.partition([[0], [0, 1]])


def test_loss_spares_gateway_and_is_independent_of_partition(
    make_net: Callable[..., NamespacedNetwork],
) -> None:
    net = make_net(3)
    net.set_loss(1, 100)
    assert probe(net, 0, 1) == "timeout"
    assert probe(net, 0, 1, "udp") == "ok"  # INPUT-hook drop: the sender sees no error
    assert from_gateway(net, 1) == "ok"
    assert "drop" not in net.rules(0)  # only host 1 drops (its inbound: also replies to it)
    net.partition([[0], [1, 2]])
    net.heal()
    assert "drop" in net.rules(1).split("chain loss")[1]  # heal kept the loss
    net.partition([[0], [1, 2]])
    net.set_loss(1, 0)
    assert probe(net, 2, 1) == "ok"
    assert probe(net, 0, 1) == "timeout"  # set_loss kept the partition
    net.clear_faults()
    assert probe(net, 0, 1) == "ok"
    assert net.rules(1).count("drop") == 0


def test_loss_is_whole_percent(make_net: Callable[..., NamespacedNetwork]) -> None:
    net = make_net(2, listen=False)
    net.set_loss(0, 12.5)
    assert "numgen random mod 100 < 13 drop" in net.rules(0)
    assert net.loss() == {0: 13}
    net.set_loss(0, 0.4)
    assert "drop" not in net.rules(0) and net.loss() == {}
    net.set_loss(0, 100)  # nft refuses `< 100` (numgen is 0..99): a plain drop instead
    assert "numgen" not in net.rules(0) and "drop" in net.rules(0)
    for bad in [-1, 100.1, float("nan")]:
        with pytest.raises(ValueError):
            net.set_loss(0, bad)
    with pytest.raises(ValueError):
        net.set_loss(2, 10)


def test_destroy_is_idempotent_and_complete(make_net: Callable[..., NamespacedNetwork]) -> None:
    net = make_net(2)
    assert len(_ours(net)) == 2 + 2 + 1
    net.destroy()
    assert _ours(net) == []
    net.destroy()


def test_second_network_is_refused_while_one_owns_the_subnet(
    make_net: Callable[..., NamespacedNetwork],
) -> None:
    first = make_net(2, listen=False)
    second = NamespacedNetwork(_run_id(), 2)
    with pytest.raises(NetnsError, match="already has an address"):
        second.create()
    second.destroy()  # made nothing, removes nothing
    assert _ours(second) == []
    assert len(_ours(first)) == 5
    with pytest.raises(NetnsError, match="already in use"):
        NamespacedNetwork(first.run_id, 2).create()


def test_failed_create_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "_TABLE_SCRIPT", "table inet agora { chain oops { nonsense } }\n")
    net = NamespacedNetwork(_run_id(), 3)
    try:
        with pytest.raises(NetnsError, match=r"nft -f -.*nonsense") as info:
            net.create()
        assert "\n" not in str(info.value)
        assert _ours(net) == []
    finally:
        net.destroy()


def test_cleanup_leftovers_after_a_crash() -> None:
    net = NamespacedNetwork(_run_id(), 2)
    net.create()
    proc = subprocess.Popen(net.exec_argv(1, ["sleep", "60"]))
    try:
        # the runner "dies" here: no destroy()
        removed = cleanup_leftovers()
        assert proc.wait(timeout=5) < 0  # SIGKILLed
        assert net.ns_name(1) in removed and net.bridge in removed
        assert leftovers() == []
    finally:
        proc.kill()
        proc.wait()
        net.destroy()


def test_leftover_names_of_live_runs_are_kept() -> None:
    """Which names belong to a run: a second run's clean-up used to remove every agsc network,
    cutting a running experiment off (its agents lost their namespaces mid-run)."""
    from scenarios.netns import owned_by

    live = {"e225ce"}
    assert owned_by("agsc-e225ce-0", live) and owned_by("agsc-e225ce-12", live)
    assert owned_by("agsce225cebr", live) and owned_by("agsce225ceh3", live)
    assert not owned_by("agsc-abc123-0", live) and not owned_by("agscabc123br", live)
    assert not owned_by("agsce225cehx", live) and not owned_by("agsc-e225ce", set())


def test_cleanup_keeps_the_network_of_a_live_runner(tmp_path, monkeypatch) -> None:
    """The state file of a run still going names its network; clean-up passes it on as kept."""
    import json
    import os

    from scenarios import run_local

    monkeypatch.setattr(run_local, "STATE_DIR", tmp_path)
    (tmp_path / "live.json").write_text(json.dumps(
        {"runner": os.getppid(), "agents": [], "network": "abc123"}))
    (tmp_path / "dead.json").write_text(json.dumps(
        {"runner": 2**22 + 12345, "agents": [], "network": "dead01"}))
    monkeypatch.setattr(run_local, "_is_runner", lambda pid: pid == os.getppid())
    seen: list[set[str]] = []
    monkeypatch.setattr(run_local.netns, "available", lambda: (True, ""))
    monkeypatch.setattr(run_local.netns, "cleanup_leftovers",
                        lambda keep=frozenset(): seen.append(set(keep)) or [])
    run_local.cleanup_leftovers()
    assert seen == [{"abc123"}]
    assert (tmp_path / "live.json").exists() and not (tmp_path / "dead.json").exists()
