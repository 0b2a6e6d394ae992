"""`agora keys` and keyed clusters from the command line, as a user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_cli import agora, assert_one_line_error

from deploy.local_cluster import LocalCluster, free_ports
from gossip.auth import Credential, Keyring


def test_generate_client_list_and_rotate(tmp_path: Path) -> None:
    key, new = tmp_path / "cluster.key", tmp_path / "new.key"
    r = agora("keys", "generate", "--out", str(key))
    assert r.returncode == 0, r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert_one_line_error(agora("keys", "generate", "--out", str(key)), "not overwriting")
    alice = tmp_path / "alice.key"
    r = agora("keys", "client", "--cluster-key", str(key), "--role", "submit", "--name", "alice",
              "--out", str(alice))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert Credential.load(alice).role == "submit"
    assert agora("keys", "generate", "--out", str(new)).returncode == 0
    first = Keyring.load(key).primary
    for step in ("install", "use"):
        r = agora("keys", "rotate", step, "--cluster-key", str(key), "--new", str(new))
        assert r.returncode == 0, r.stderr
    ring = Keyring.load(key)
    assert ring.secrets == (Keyring.load(new).primary, first)
    assert_one_line_error(agora("keys", "rotate", "remove", "--cluster-key", str(key),
                                "--old", str(new)), "is the one in use")  # fmt: skip
    old = tmp_path / "old.key"
    Keyring((first,)).save(old)
    assert agora("keys", "rotate", "remove", "--cluster-key", str(key), "--old",
                 str(old)).returncode == 0  # fmt: skip
    r = agora("keys", "list", "--cluster-key", str(key))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 and "primary" in r.stdout


@pytest.mark.parametrize("problem, needle", [
    ("world-readable", "readable by others"),
    ("missing", "no such key file"),
    ("malformed", "not a key file"),
    ("client-key", "expected a cluster key"),
])  # fmt: skip
def test_bad_cluster_key_stops_the_agent_at_once(tmp_path: Path, problem: str,
                                                 needle: str) -> None:  # fmt: skip
    key = tmp_path / "k.key"
    if problem == "world-readable":
        Keyring.generate().save(key)
        key.chmod(0o644)
    elif problem == "malformed":
        key.write_text("kind = \n")
        key.chmod(0o600)
    elif problem == "client-key":
        Credential.issue(Keyring.generate(), "read", "x").save(key)
    (port,) = free_ports(1)
    r = agora("agent", "--bind", f"tcp://127.0.0.1:{port}", "--cluster-key", str(key), timeout=20)
    assert_one_line_error(r, needle)


def test_bad_client_key_is_a_one_line_error(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_text("garbage\n")
    key.chmod(0o600)
    assert_one_line_error(agora("members", "--key", str(key)), "not a key file")
    assert_one_line_error(agora("tasks", "--key", str(tmp_path / "none")), "no such key file")


@pytest.mark.slow
def test_keyed_cluster_end_to_end(tmp_path: Path) -> None:
    """Real agents with --cluster-key: keyless clients get nothing, credentials get their role."""
    with LocalCluster(2, log_level="WARNING", keyed=True, workdir=tmp_path) as c:
        c.start()
        c.wait_converged(timeout=20)
        addr, key = c.nodes[0].addr, str(c.cluster_key)
        r = agora("members", "--agent", addr, "--timeout", "1")
        assert_one_line_error(r, "a keyed agent needs --key")
        r = agora("members", "--agent", addr, "--key", key)
        assert r.returncode == 0 and "node1" in r.stdout, r.stderr
        reader, alice = tmp_path / "r.key", tmp_path / "a.key"
        for role, name, out in (("read", "rita", reader), ("submit", "alice", alice)):
            assert agora("keys", "client", "--cluster-key", key, "--role", role, "--name", name,
                         "--out", str(out)).returncode == 0  # fmt: skip
        r = agora("submit", "--agent", addr, "--key", str(reader), "--", "true")
        assert_one_line_error(r, "needs the submit role")
        env = {**os.environ, "AGORA_KEY": str(alice)}
        r = subprocess.run(agora_argv("submit", "--agent", addr, "--wait", "--", "echo", "hi"),
                           capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        r = agora("tasks", "--agent", addr, "--key", str(reader), "--json")
        assert r.returncode == 0 and '"submitter": "alice"' in r.stdout, r.stderr


def agora_argv(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "deploy.cli", *args]
