"""A cluster of real agents on this machine: one subprocess per agent, on loopback.

Used by `make demo`, the end-to-end tests and benchmarks::

    with LocalCluster(5, swim={"probe_interval": 0.2}) as c:
        c.start()
        c.wait_converged(timeout=10)
        c.kill(2)                                   # SIGKILL
        c.wait_status(c.nodes[2].node_id, "failed")
        c.terminate(3)                              # SIGTERM: graceful leave
        c.wait_status(c.nodes[3].node_id, "left")

Every agent is ``python -m deploy.cli agent`` with its own config file and log file in a
working directory (a temporary one unless given). `stop()` — also run on leaving the `with`
block, even on error — ends every child still running (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deploy.client import ClientError, query
from gossip.auth import Credential, Keyring

REPO_ROOT = Path(__file__).resolve().parents[1]

Views = dict[str, dict[str, str] | None]
"""observer node id -> {member node id -> status label}, or None if the observer did not answer."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports that are free right now (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def write_config(
    path: Path, top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]
) -> None:
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        if table:
            lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class LocalNode:
    index: int
    node_id: str
    addr: str
    proc: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]
    started: float

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


class LocalCluster:
    def __init__(
        self,
        n: int,
        swim: Mapping[str, Any] | None = None,
        *,
        workdir: str | Path | None = None,
        log_level: str = "INFO",
        join_timeout: float = 10.0,
        load_interval: float = 1.0,
        resources: Mapping[str, Any] | None = None,
        placement: Mapping[str, Any] | None = None,
        forecaster: str = "meta",
        python: str = sys.executable,
        host: str = "127.0.0.1",
        query_timeout: float = 1.0,
        keyed: bool = False,
    ) -> None:
        """`keyed`: make a cluster key in `workdir`, run every agent with it and ask them
        with an admin credential (`credential`)."""
        if n < 1:
            raise ValueError("a cluster needs at least one agent")
        self.n = n
        self.swim = dict(swim or {})
        self.log_level = log_level
        self.join_timeout = join_timeout
        self.load_interval = load_interval
        self.resources = dict(resources or {})
        self.placement = dict(placement or {})
        self.forecaster = forecaster
        self.python = python
        self.host = host
        self.query_timeout = query_timeout
        self._tmp: tempfile.TemporaryDirectory | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="agora-cluster-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[LocalNode] = []
        self.cluster_key: Path | None = None
        self.credential: Credential | None = None
        if keyed:
            self.cluster_key = self.workdir / "cluster.key"
            ring = Keyring.generate()
            ring.save(self.cluster_key)
            self.credential = Credential.issue(ring, "admin", "operator")

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, port: int, seeds: list[str], node_id: str | None = None) -> LocalNode:
        """Start one agent process (does not wait for it)."""
        index = len(self.nodes)
        node_id = node_id or f"node{index}"
        addr = f"tcp://{self.host}:{port}"
        cfg = self.workdir / f"{node_id}.toml"
        write_config(
            cfg,
            {"node_id": node_id, "bind": addr, "join": seeds, "join_timeout": self.join_timeout,
             "load_interval": self.load_interval, "log_level": self.log_level,
             "forecaster": self.forecaster,
             **({"cluster_key": str(self.cluster_key)} if self.cluster_key else {})},
            {"resources": self.resources, "swim": self.swim, "placement": self.placement},
        )  # fmt: skip
        log_path = self.workdir / f"{node_id}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [self.python, "-m", "deploy.cli", "agent", "--config", str(cfg)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=self._env(), cwd=str(REPO_ROOT),
        )  # fmt: skip
        node = LocalNode(index, node_id, addr, proc, log_path, log_file, time.monotonic())
        self.nodes.append(node)
        return node

    def start(self, timeout: float = 20.0) -> float:
        """Start all agents: the first alone, then the rest joining it. Returns seconds taken.

        Waits until every agent answers queries (not for convergence: see `wait_converged`).
        """
        t0 = time.monotonic()
        try:
            ports = free_ports(self.n, self.host)
            first = self.spawn(ports[0], [])
            self.wait_answering([first], timeout)
            for port in ports[1:]:
                self.spawn(port, [first.addr])
            self.wait_answering(self.nodes, timeout - (time.monotonic() - t0))
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def wait_answering(self, nodes: list[LocalNode], timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0.1)
        pending = list(nodes)
        while pending:
            for node in list(pending):
                if not node.running:
                    raise RuntimeError(
                        f"agent {node.node_id} exited with {node.proc.returncode}:\n"
                        + self.log_tail(node)
                    )
                try:
                    query(node.addr, "stats", timeout=0.3, credential=self.credential)
                    pending.remove(node)
                except ClientError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(n.node_id for n in pending)
                raise TimeoutError(f"agents not answering after {timeout:.1f} s: {names}")
            if pending:
                time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> None:
        """End every child still running (SIGTERM, then SIGKILL after `grace`). Idempotent."""
        for node in self.nodes:
            if node.running:
                try:
                    node.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for node in self.nodes:
            try:
                node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.log_file.close()

    def cleanup(self) -> None:
        """stop() and remove the temporary working directory (if this cluster made it)."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------------ faults

    def node(self, which: int | str) -> LocalNode:
        if isinstance(which, int):
            return self.nodes[which]
        for n in self.nodes:
            if n.node_id == which:
                return n
        raise KeyError(which)

    def kill(self, which: int | str) -> LocalNode:
        """SIGKILL: the agent vanishes without a word."""
        node = self.node(which)
        node.proc.kill()
        node.proc.wait()
        return node

    def terminate(self, which: int | str, timeout: float = 10.0) -> int:
        """SIGTERM: graceful leave. Returns the exit code."""
        node = self.node(which)
        node.proc.send_signal(signal.SIGTERM)
        return node.proc.wait(timeout=timeout)

    # ------------------------------------------------------------------ observing

    @property
    def running(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.running]

    def members(self, which: int | str, timeout: float | None = None) -> list[dict[str, Any]]:
        return query(self.node(which).addr, "members", timeout=timeout or self.query_timeout,
                     credential=self.credential)  # fmt: skip

    def stats(self, which: int | str, timeout: float | None = None) -> dict[str, Any]:
        return query(self.node(which).addr, "stats", timeout=timeout or self.query_timeout,
                     credential=self.credential)  # fmt: skip

    def views(self) -> Views:
        """Every running agent's view: {observer: {member: status}} (None: no answer)."""
        out: Views = {}
        for node in self.running:
            try:
                rows = self.members(node.node_id)
                out[node.node_id] = {r["node"]: r["status"] for r in rows}
            except ClientError:
                out[node.node_id] = None
        return out

    def wait_until(
        self, pred: Callable[[Views], bool], timeout: float, interval: float = 0.1,
        on_poll: Callable[[Views], None] | None = None,
    ) -> float:  # fmt: skip
        """Poll `views()` until `pred` holds; returns seconds waited, TimeoutError otherwise."""
        t0 = time.monotonic()
        while True:
            views = self.views()
            if on_poll is not None:
                on_poll(views)
            if pred(views):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"condition not met after {timeout:.1f} s; views: {views}")
            time.sleep(interval)

    def converged(self, views: Views) -> bool:
        """Every running agent answers and sees exactly the running agents as alive."""
        expected = {n.node_id for n in self.running}
        return all(
            v is not None and {k for k, s in v.items() if s == "alive"} == expected
            for v in views.values()
        )

    def wait_converged(self, timeout: float = 20.0, **kw: Any) -> float:
        return self.wait_until(self.converged, timeout, **kw)

    def wait_status(self, node_id: str, status: str, timeout: float = 20.0, **kw: Any) -> float:
        """Wait until every running agent (other than `node_id`) reports it with `status`."""

        def ok(views: Views) -> bool:
            others = {k: v for k, v in views.items() if k != node_id}
            return bool(others) and all(v is not None and v.get(node_id) == status
                                        for v in others.values())  # fmt: skip

        return self.wait_until(ok, timeout, **kw)

    def log_tail(self, which: int | str | LocalNode, lines: int = 30) -> str:
        node = which if isinstance(which, LocalNode) else self.node(which)
        if not node.log_file.closed:
            node.log_file.flush()
        try:
            text = node.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
