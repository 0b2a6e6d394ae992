"""Real agents as real processes on loopback: converge, detect a crash, see a graceful leave."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq

from deploy.local_cluster import LocalCluster
from gossip.config import FAST_SWIM

pytestmark = pytest.mark.slow



@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(6, swim=FAST_SWIM, log_level="INFO", load_interval=0.3)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()
    assert not c.running  # every child was ended


def _logs(c: LocalCluster) -> str:
    return "\n".join(f"--- {n.node_id}\n{c.log_tail(n, 15)}" for n in c.nodes)


def test_converge_crash_and_leave(cluster: LocalCluster) -> None:
    c = cluster
    try:
        c.wait_converged(timeout=15)
        # resources and load are gossiped: every row carries the node's capacity
        rows = c.members(0)
        assert len(rows) == 6
        assert all(r["cpus"] and r["memory"] for r in rows), rows

        killed = c.kill(5)
        c.wait_status(killed.node_id, "failed", timeout=15)

        code = c.terminate(4)
        assert code == 0
        c.wait_status(c.nodes[4].node_id, "left", timeout=10)
        # the crashed node stays failed, the others alive
        for observer, view in c.views().items():
            assert view is not None
            assert view[killed.node_id] == "failed", observer
            assert {n for n, s in view.items() if s == "alive"} == {f"node{i}" for i in range(4)}
    except (TimeoutError, AssertionError) as e:
        raise AssertionError(f"{e}\n{_logs(c)}") from None
    stats = c.stats(0)
    assert stats["core"].get("ping_sent", 0) > 0
    assert "INFO" in c.log_tail(0, 100) and "node5" in c.log_tail(0, 100)


def test_real_process_survives_garbage(cluster: LocalCluster) -> None:
    c = cluster
    c.wait_converged(timeout=15)
    victim = c.nodes[1]
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(victim.addr)
    for payload in (b"", b"\xc1", b"\x96\x01" * 50, bytes(range(256)), b"\x93\x01\x02\x03"):
        s.send(payload)
    s.close()
    ctx.term()
    # raw TCP junk that is not even ZeroMQ: the handshake fails and ZeroMQ drops the connection
    host, port = victim.addr.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 10)
    c.wait_until(lambda v: sum(c.stats(1)["dropped"].values()) >= 5, timeout=5)
    assert victim.running
    c.wait_converged(timeout=10)  # and the cluster is undisturbed
