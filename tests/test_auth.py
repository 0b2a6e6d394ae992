"""Keyed clusters: only key holders get in, a key speaks only for its own principal.

Key files and the verifier are tested directly; the rest on in-process agents (each on its own
event loop in a thread) over real ZeroMQ CURVE connections.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from agent_thread import AgentThread

from agent.messages import Award
from agent.tasks import TaskRecord, TaskSpec
from deploy.client import NoAnswer, QueryRefused, query
from gossip.auth import (
    Credential,
    KeyFileError,
    Keyring,
    Verifier,
    client_keypair,
    node_keypair,
    server_keypair,
)
from gossip.datagram import DatagramCodec, DatagramKeys, udp_target
from gossip.messages import Message, Nack, Query
from gossip.wire import encode

# ---------------------------------------------------------------- key files


def _ring_file(tmp_path: Path, name: str = "cluster.key") -> tuple[Path, Keyring]:
    ring = Keyring.generate()
    path = tmp_path / name
    ring.save(path)
    return path, ring


def test_keyring_round_trip_is_private(tmp_path: Path) -> None:
    path, ring = _ring_file(tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Keyring.load(path) == ring


@pytest.mark.parametrize("text, message", [
    ('kind = "agora-cluster-key"\nkeys = []\n', "non-empty list"),
    ('kind = "agora-client-key"\nkeys = ["AAAA"]\n', "expected a cluster key"),
    ('kind = "agora-cluster-key"\nkeys = ["not base64!"]\n', "not valid base64"),
    ('kind = "agora-cluster-key"\nkeys = ["AAAA"]\n', "must be 32 bytes"),
    ("keys = [\n", "malformed"),
    ('kind = "agora-cluster-key"\nkeys = [1]\n', "base64 string"),
])  # fmt: skip
def test_bad_key_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message) as e:
        Keyring.load(path)
    assert "\n" not in str(e.value)


def test_world_readable_or_missing_key_files_are_refused(tmp_path: Path) -> None:
    path, _ = _ring_file(tmp_path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        Keyring.load(path)
    with pytest.raises(KeyFileError, match="no such key file"):
        Keyring.load(tmp_path / "absent.key")
    cred = tmp_path / "c.key"
    Credential.issue(Keyring.generate(), "read", "x").save(cred)
    with pytest.raises(KeyFileError, match="expected a cluster key"):
        Keyring.load(cred)  # a key of the wrong kind


def test_credentials_round_trip_and_cluster_key_is_admin(tmp_path: Path) -> None:
    path, ring = _ring_file(tmp_path)
    cred = Credential.issue(ring, "submit", "alice")
    cred.save(tmp_path / "alice.key")
    assert Credential.load(tmp_path / "alice.key") == cred
    operator = Credential.load(path)
    assert (operator.role, operator.name) == ("admin", "operator")
    with pytest.raises(KeyFileError, match="unknown role"):
        Credential.issue(ring, "root", "alice")
    with pytest.raises(KeyFileError, match="bad client name"):
        Credential.issue(ring, "read", "a b")


def test_verifier_binds_each_sender_to_its_own_key() -> None:
    ring, other = Keyring.generate(), Keyring.generate()
    v = Verifier(ring)
    n1 = node_keypair(ring.primary, "n1").public.decode()
    alice = client_keypair(ring.primary, "submit", "alice").public.decode()
    assert v.principal("n1", n1).is_node
    assert v.principal("n2", n1) is None  # a node claiming another's id
    p = v.principal("@submit:alice", alice)
    assert p is not None and (p.name, p.role, p.is_node) == ("alice", "submit", False)
    assert v.principal("@admin:alice", alice) is None  # a role it was not given
    assert v.principal("alice", alice) is None  # a client speaking as a node
    assert v.principal("n1", node_keypair(other.primary, "n1").public.decode()) is None
    assert v.principal("n1", "") is None  # no key at all
    # a rotation: a second key of the ring is accepted too
    both = Verifier(Keyring((other.primary, ring.primary)))
    assert both.principal("n1", n1) is not None


# ---------------------------------------------------------------- live agents


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _alive(agent: AgentThread, cred: Credential) -> set[str]:
    rows = query(agent.addr, "members", timeout=2.0, credential=cred)
    return {r["node"] for r in rows if r["status"] == "alive"}


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Path, Keyring, list[AgentThread]]]:
    path, ring = _ring_file(tmp_path)
    agents: list[AgentThread] = []
    yield path, ring, agents
    for a in agents:
        a.stop()
    for a in agents:
        assert a.error is None or "could not reach" in str(a.error), a.error


def _raw_dealer(addr: str, keys: tuple[bytes, bytes, bytes] | None) -> zmq.Socket:
    """A DEALER speaking to `addr`; `keys` = (server public, own public, own secret)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = keys
    s.connect(addr)
    return s


def test_keyed_agent_answers_only_key_holders(keyed: Any) -> None:
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    agents.append(a)
    admin = Credential.load(path)
    assert _alive(a, admin) == {"n1"}
    with pytest.raises(NoAnswer):  # no key: the CURVE handshake never completes
        query(a.addr, "members", timeout=0.5)
    stranger = Credential.issue(Keyring.generate(), "admin", "operator")
    with pytest.raises(NoAnswer):  # a credential of another cluster
        query(a.addr, "members", timeout=0.5, credential=stranger)
    _wait(lambda: query(a.addr, "stats", credential=admin)["transport"].get(
        "handshake_failed", 0) >= 2)


def test_agents_with_another_cluster_key_cannot_join(keyed: Any, tmp_path: Path) -> None:
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    b = AgentThread("n2", str(path), seeds=[a.addr])
    other, _ = _ring_file(tmp_path, "other.key")
    c = AgentThread("n3", str(other), seeds=[a.addr])
    agents += [a, b, c]
    admin = Credential.load(path)
    _wait(lambda: _alive(a, admin) == {"n1", "n2"})
    c.thread.join(6)
    assert c.error is not None and "could not reach any seed" in str(c.error)
    assert _alive(a, admin) == {"n1", "n2"}


def test_roles_and_ownership(keyed: Any) -> None:
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    agents.append(a)
    reader = Credential.issue(ring, "read", "rita")
    alice = Credential.issue(ring, "submit", "alice")
    bob = Credential.issue(ring, "submit", "bob")
    admin = Credential.load(path)
    spec = {"argv": ["sh", "-c", "echo secret-$X; sleep 30"], "cpus": 0.1,
            "env": {"X": "42"}}  # fmt: skip
    with pytest.raises(QueryRefused, match="needs the submit role"):
        query(a.addr, "submit", credential=reader, args={"id": "t1", "spec": spec})
    with pytest.raises(QueryRefused, match="needs the admin role"):
        query(a.addr, "set_labels", credential=alice, args={"labels": {"k": "v"}})
    query(a.addr, "submit", timeout=5, credential=alice, args={"id": "t1", "spec": spec})
    _wait(lambda: query(a.addr, "status", credential=alice, args={"id": "t1"})["state"]
          == "running")  # fmt: skip
    own = query(a.addr, "status", credential=alice, args={"id": "t1"})
    assert own["argv"] == spec["argv"] and own["submitter"] == "alice"
    for other in (bob, reader):
        seen = query(a.addr, "status", credential=other, args={"id": "t1"})
        assert seen["argv"] == ["sh", "(hidden: not your task)"] and seen["stdout"] == ""
        listed = query(a.addr, "tasks", credential=other)["tasks"]
        assert [r["argv"] for r in listed] == [["sh", "(hidden: not your task)"]]
    _wait(lambda: "secret-42" in query(a.addr, "logs", credential=alice,
                                       args={"id": "t1"})["stdout"])  # fmt: skip
    with pytest.raises(QueryRefused, match="not submitted by 'bob'"):
        query(a.addr, "logs", credential=bob, args={"id": "t1"})
    with pytest.raises(QueryRefused, match="not submitted by 'bob'"):
        query(a.addr, "cancel", timeout=5, credential=bob, args={"id": "t1"})
    assert query(a.addr, "status", credential=admin, args={"id": "t1"})["state"] == "running"
    assert query(a.addr, "cancel", timeout=5, credential=alice,
                 args={"id": "t1"})["state"] == "cancelled"  # fmt: skip
    refused = query(a.addr, "stats", credential=admin)["refused"]
    assert refused["role"] == 2


def test_forged_award_from_a_process_that_is_no_agent_runs_nothing(tmp_path: Path) -> None:
    """Finding 1, on a plain cluster: the award names replicas; its sender is none of them."""
    a = AgentThread("n1")
    try:
        marker = tmp_path / "pwned"
        rec = TaskRecord("evil", TaskSpec(("touch", str(marker)), cpus=0.1), replicas=("x",),
                         attempt=1)  # fmt: skip
        s = _raw_dealer(a.addr, None)
        for sender in ("x", "n1"):  # not a member; a member's id from another address
            s.send(encode(Message(sender, "tcp://127.0.0.1:9", 1, Award(rec, 1))))
        time.sleep(0.5)
        assert not marker.exists()
        stats = query(a.addr, "stats")
        assert stats["placement"]["refused_awards"] == 2 and stats["running"] == 0
        s.close()
    finally:
        a.stop()


def _two_keyed_agents(keyed: Any) -> tuple[Any, AgentThread, AgentThread, Credential]:
    """(ring, n1, n2 joined through n1, an admin credential), once both see each other alive."""
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    b = AgentThread("n2", str(path), seeds=[a.addr])
    agents += [a, b]
    admin = Credential.load(path)
    _wait(lambda: _alive(a, admin) == {"n1", "n2"})
    return ring, a, b, admin


def test_keyed_agent_refuses_forged_senders(keyed: Any, tmp_path: Path) -> None:
    """A client key cannot send protocol messages; a node key cannot claim another node's id."""
    ring, a, b, admin = _two_keyed_agents(keyed)
    server = server_keypair(ring.primary).public
    marker = tmp_path / "pwned"
    rec = TaskRecord("evil", TaskSpec(("touch", str(marker)), cpus=0.1),
                     replicas=("n2",), attempt=1)  # fmt: skip
    alice = client_keypair(ring.primary, "submit", "alice")
    s = _raw_dealer(a.addr, (server, alice.public, alice.secret))
    s.send(encode(Message("@submit:alice", b.addr, 1, Award(rec, 1))))  # a client, as itself
    s.send(encode(Message("n2", b.addr, 2, Award(rec, 1))))  # a client, as a node
    n3 = node_keypair(ring.primary, "n3")
    t = _raw_dealer(a.addr, (server, n3.public, n3.secret))
    t.send(encode(Message("n2", b.addr, 3, Award(rec, 1))))  # node n3 claiming to be n2
    t.send(encode(Message("n2", b.addr, 4, Nack("n1"))))
    _wait(lambda: sum(query(a.addr, "stats", credential=admin)["refused"].values()) >= 4)
    stats = query(a.addr, "stats", credential=admin)
    assert stats["refused"] == {"client_not_node": 1, "unauthenticated": 3}
    assert stats["running"] == 0 and not marker.exists()
    assert _alive(a, admin) == {"n1", "n2"}
    s.close()
    t.close()


def test_keyed_agent_refuses_forged_datagrams(keyed: Any, tmp_path: Path) -> None:
    """The UDP port holds to the same rules as the stream: sealed with a member's own key,
    speaking only for that member, and only what rides datagrams (never an award or a query)."""
    ring, a, b, admin = _two_keyed_agents(keyed)
    server = server_keypair(ring.primary)
    n3 = node_keypair(ring.primary, "n3")
    as_n3 = DatagramCodec(DatagramKeys(n3.public, n3.secret, server.public,
                                       ((server.public, server.secret),)))  # fmt: skip
    marker = tmp_path / "pwned"
    rec = TaskRecord("evil", TaskSpec(("touch", str(marker)), cpus=0.1),
                     replicas=("n3",), attempt=1)  # fmt: skip
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = udp_target(a.addr)
    try:
        udp.sendto(as_n3.seal(encode(Message("n2", b.addr, 4, Nack("n1")))), target)  # as n2
        udp.sendto(as_n3.seal(encode(Message("n3", b.addr, 5, Award(rec, 1)))), target)
        udp.sendto(as_n3.seal(encode(Message("n3", b.addr, 6, Query("members", {})))), target)
        udp.sendto(DatagramCodec().seal(encode(Message("n2", b.addr, 7, Nack("n1")))), target)
        udp.sendto(b"\x02" + os.urandom(200), target)

        def counted() -> dict:
            st = query(a.addr, "stats", credential=admin)
            return {"refused": st["refused"], "dropped": st["dropped"],
                    "plain": st["transport"].get("datagram_plain", 0),
                    "unopened": st["transport"].get("datagram_unknown_key", 0)
                    + st["transport"].get("datagram_unauthenticated", 0)}  # fmt: skip

        _wait(lambda: counted()["dropped"].get("not_a_datagram_kind", 0) >= 2)
        got = counted()
        assert got["refused"] == {"unauthenticated": 1}
        assert got["dropped"] == {"not_a_datagram_kind": 2}
        assert got["plain"] == 1 and got["unopened"] == 1
        assert not marker.exists() and _alive(a, admin) == {"n1", "n2"}
    finally:
        udp.close()


class _Recorder:
    """A TCP proxy that records what the client sends (to replay it later)."""

    def __init__(self, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.sent = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        up = socket.create_connection(("127.0.0.1", self.target))

        def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
            while data := src.recv(65536):
                if record:
                    self.sent.extend(data)
                dst.sendall(data)

        threading.Thread(target=pump, args=(up, conn, False), daemon=True).start()
        pump(conn, up, True)


def test_a_replayed_message_is_rejected(keyed: Any) -> None:
    """The bytes of a recorded session, sent again, change nothing (CURVE's fresh session keys)."""
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    agents.append(a)
    admin = Credential.load(path)
    port = int(a.addr.rsplit(":", 1)[1])
    rec = _Recorder(port)
    query(f"tcp://127.0.0.1:{rec.port}", "set_labels", credential=admin,
          args={"labels": {"k": "first"}})  # fmt: skip
    query(a.addr, "set_labels", credential=admin, args={"labels": {"k": "second"}})
    assert len(rec.sent) > 100
    before = query(a.addr, "stats", credential=admin)["transport"].get("handshake_failed", 0)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(bytes(rec.sent))
        time.sleep(0.5)
    row = next(r for r in query(a.addr, "members", credential=admin) if r["node"] == "n1")
    assert row["labels"] == {"k": "second"}
    _wait(lambda: query(a.addr, "stats", credential=admin)["transport"].get(
        "handshake_failed", 0) > before)


def test_rotation_install_use_remove_keeps_the_cluster(keyed: Any, tmp_path: Path) -> None:
    """Serf's order on a running cluster: every agent re-reads its file; nobody is failed."""
    path, ring, agents = keyed
    files = [tmp_path / f"n{i}.key" for i in range(3)]
    for f in files:
        ring.save(f)
    a = AgentThread("n0", str(files[0]))
    agents.append(a)
    agents += [AgentThread(f"n{i}", str(files[i]), seeds=[a.addr]) for i in (1, 2)]
    old = Credential.issue(ring, "admin", "ops")
    _wait(lambda: _alive(a, old) == {"n0", "n1", "n2"})
    new = Keyring.generate()
    steps = [Keyring((ring.primary, new.primary)), Keyring((new.primary, ring.primary)),
             Keyring((new.primary,))]  # fmt: skip
    for step in steps:
        for i, f in enumerate(files):  # one node after the other, as an operator would
            step.save(f)
            agents[i].call(agents[i].agent.reload_keys)
        cred = Credential.issue(step, "admin", "ops")
        _wait(lambda cred=cred: all(_alive(x, cred) == {"n0", "n1", "n2"} for x in agents))
    with pytest.raises(NoAnswer):  # the old key is gone
        query(a.addr, "members", timeout=0.5, credential=old)
    for x in agents:
        core = x.call(lambda x=x: dict(x.agent.core.stats))
        assert core.get("declared_dead", 0) == 0, core


def test_flooding_one_agent_leaves_it_serving(keyed: Any) -> None:
    """20,000 refused messages from a client key: the agent still answers within a second."""
    path, ring, agents = keyed
    a = AgentThread("n1", str(path))
    agents.append(a)
    admin = Credential.load(path)
    mallory = client_keypair(ring.primary, "read", "mallory")
    s = _raw_dealer(a.addr, (server_keypair(ring.primary).public, mallory.public,
                             mallory.secret))  # fmt: skip
    s.setsockopt(zmq.SNDHWM, 0)
    flood = encode(Message("n2", "tcp://127.0.0.1:9", 1, Nack("n1")))
    stop = threading.Event()

    def spam() -> None:
        while not stop.is_set():
            for _ in range(1000):
                s.send(flood)
            time.sleep(0.01)

    th = threading.Thread(target=spam, daemon=True)
    th.start()
    try:
        for _ in range(5):
            t0 = time.monotonic()
            query(a.addr, "members", timeout=2.0, credential=admin)
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.1)
    finally:
        stop.set()
        th.join()
        s.close()
    assert query(a.addr, "stats", credential=admin)["refused"]["unauthenticated"] > 1000


def test_plain_clients_may_not_speak_as_clients_of_a_keyed_cluster() -> None:
    """On a plain cluster a '@role:name' sender is an (unauthenticated) admin client only."""
    a = AgentThread("n1")
    try:
        s = _raw_dealer(a.addr, None)
        s.send(encode(Message("@read:x", "", 7, Query("members", {}))))
        assert s.poll(2000)
        s.send(encode(Message("@read:x", "tcp://127.0.0.1:9", 8, Nack("n1"))))
        _wait(lambda: query(a.addr, "stats")["refused"].get("client_not_node", 0) == 1)
        s.close()
    finally:
        a.stop()
