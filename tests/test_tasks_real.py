"""Tasks on real agent processes: run somewhere, show their output, survive their node's death."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from deploy.client import QueryRefused, query
from deploy.local_cluster import LocalCluster
from gossip.config import FAST_SWIM

pytestmark = pytest.mark.slow

TERMINAL = ("succeeded", "failed", "cancelled", "rejected")


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(4, swim=FAST_SWIM, load_interval=0.3,
                     resources={"cpus": 2, "memory": "1GiB"},
                     placement={"heartbeat": 0.5, "report_retry": 0.3})  # fmt: skip
    try:
        c.start()
        c.wait_converged(timeout=20)
        yield c
    finally:
        c.cleanup()
    assert not c.running


def _wait(addr: str, task_id: str, ok, timeout: float = 20.0,
          c: LocalCluster | None = None) -> dict:
    deadline = time.monotonic() + timeout
    row: dict = {}
    while time.monotonic() < deadline:
        row = query(addr, "status", 3.0, {"id": task_id})
        if ok(row):
            return row
        time.sleep(0.1)
    logs = _logs(c) if c is not None else ""
    raise AssertionError(f"task {task_id} never got there: {row}\n{logs}")


def _logs(c: LocalCluster) -> str:
    return "\n".join(f"--- {n.node_id}\n{c.log_tail(n, 25)}" for n in c.nodes)


def test_echo_runs_and_bad_requests_are_refused(cluster: LocalCluster) -> None:
    c = cluster
    a, b = c.nodes[0].addr, c.nodes[3].addr
    rep = query(a, "submit", 5, {"id": "hello", "spec": {"argv": ["echo", "hello"]}})
    assert rep["id"] == "hello" and len(rep["replicas"]) == 3
    row = _wait(b, "hello", lambda r: r["state"] in TERMINAL)  # asked at another agent
    assert row["state"] == "succeeded" and row["exit_code"] == 0, row
    assert row["stdout"] == "hello\n"
    assert row["node"] and row["started"] >= row["submitted"]
    # the same id again is the same task: nothing new runs
    again = query(b, "submit", 5, {"id": "hello", "spec": {"argv": ["echo", "hello"]}})
    assert again["existing"] and again["state"] == "succeeded"
    with pytest.raises(QueryRefused, match="taken by a different task"):
        query(a, "submit", 5, {"id": "hello", "spec": {"argv": ["echo", "other"]}})
    # too big for any node, unknown labels: refused at submit, with the reason
    with pytest.raises(QueryRefused, match="no node could ever run it"):
        query(a, "submit", 5, {"id": "huge", "spec": {"argv": ["true"], "cpus": 64}})
    with pytest.raises(QueryRefused, match="labels zone=mars"):
        query(a, "submit", 5, {"id": "mars",
                               "spec": {"argv": ["true"], "labels": {"zone": "mars"}}})
    with pytest.raises(QueryRefused, match="cpus must be"):
        query(a, "submit", 5, {"id": "neg", "spec": {"argv": ["true"], "cpus": -1}})
    with pytest.raises(QueryRefused, match="unknown task id"):
        query(a, "status", 5, {"id": "never-submitted"})
    # a command that does not exist fails with that reason; the agent lives on
    query(a, "submit", 5, {"id": "nocmd", "spec": {"argv": ["no-such-command-xyz"]}})
    row = _wait(a, "nocmd", lambda r: r["state"] in TERMINAL)
    assert row["state"] == "failed" and "command not found" in row["reason"], row
    assert all(n.running for n in c.nodes)


def test_task_survives_the_death_of_its_node(cluster: LocalCluster) -> None:
    c = cluster
    a = c.nodes[0].addr
    query(a, "submit", 5, {"id": "long", "spec": {"argv": ["sh", "-c", "sleep 3; echo done"],
                                                   "cpus": 1}})  # fmt: skip
    row = _wait(a, "long", lambda r: r["state"] == "running")
    runner = row["node"]
    idx = next(n.index for n in c.nodes if n.node_id == runner)
    pids = query(row["node_addr"], "stats", 3)  # the runner answers: it is alive
    assert pids["running"] == 1
    c.kill(idx)
    alive = next(n for n in c.nodes if n.running).addr
    try:
        row = _wait(alive, "long", lambda r: r["state"] in TERMINAL, timeout=40)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_logs(c)}") from None
    assert row["state"] == "succeeded", row
    assert row["node"] != runner and row["attempt"] >= 2, row
    assert row["stdout"] == "done\n"


def test_cancel_and_logs_of_a_running_task(cluster: LocalCluster) -> None:
    c = cluster
    a = c.nodes[1].addr
    query(a, "submit", 5, {"id": "chatty", "spec": {
        "argv": ["sh", "-c", "echo started; sleep 30"], "cpus": 1}})  # fmt: skip
    row = _wait(a, "chatty", lambda r: r["state"] == "running")
    deadline = time.monotonic() + 10
    logs = {}
    while time.monotonic() < deadline:
        logs = query(row["node_addr"], "logs", 3, {"id": "chatty"})
        if logs["stdout"]:
            break
        time.sleep(0.1)
    assert logs["stdout"] == "started\n" and logs["running"]
    rep = query(c.nodes[2].addr, "cancel", 5, {"id": "chatty"})
    assert rep["state"] == "cancelled"
    row = _wait(a, "chatty", lambda r: r["state"] in TERMINAL)
    assert row["state"] == "cancelled"
    # the run is stopped on its node
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and query(row["node_addr"], "stats", 3)["running"]:
        time.sleep(0.1)
    assert query(row["node_addr"], "stats", 3)["running"] == 0
    with pytest.raises(QueryRefused, match="already cancelled"):
        query(a, "cancel", 5, {"id": "chatty"})
    listed = query(a, "tasks", 5, {"state": "cancelled"})
    assert [t["id"] for t in listed["tasks"]] == ["chatty"]


def test_orphans_die_with_their_agent(cluster: LocalCluster, tmp_path) -> None:
    c = cluster
    marker = tmp_path / "pid"
    a = c.nodes[0].addr
    query(a, "submit", 5, {"id": "orphan", "spec": {
        "argv": ["sh", "-c", f"echo $$ > {marker}; exec sleep 60"], "cpus": 1}})  # fmt: skip
    row = _wait(a, "orphan", lambda r: r["state"] == "running" and marker.exists())
    time.sleep(0.2)
    pid = int(marker.read_text())
    idx = next(n.index for n in c.nodes if n.node_id == row["node"])
    c.kill(idx)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the task outlived its agent"


def test_a_task_inherits_none_of_its_agents_descriptors(cluster: LocalCluster) -> None:
    """Tasks are spawned without closing descriptors (posix_spawn): this holds only because every
    descriptor the agent opens (ZeroMQ's, UDP, pipes, logs) is close-on-exec."""
    a = cluster.nodes[0].addr
    query(a, "submit", 5, {"id": "fds", "spec": {"argv": ["ls", "/proc/self/fd"]}})
    row = _wait(a, "fds", lambda r: r["state"] in TERMINAL)
    assert row["state"] == "succeeded", row
    fds = {int(x) for x in row["stdout"].split()}
    assert fds <= {0, 1, 2, 3}, row["stdout"]  # 3: the directory `ls` itself is reading
    # what the agents sent for it, by message kind (`stats`: read by the benchmarks)
    kinds: dict[str, int] = {}
    for n in cluster.nodes:
        for k, v in query(n.addr, "stats", 5)["sent_by_kind"].items():
            kinds[k] = kinds.get(k, 0) + v
    # (the award and the report are messages only when the owner did not place it on itself)
    assert kinds["TaskPut"] >= 3 and kinds["TaskPutAck"] >= 2, kinds


@pytest.mark.usefixtures("netns_turn")  # the demo makes a namespaced network (as root)
def test_make_demo_runs_the_demo_scenario_with_real_agents(tmp_path) -> None:  # noqa: ANN001
    """`make demo` plays the shipped demo scenario (real agents, a crash and restart, a partition
    that heals) and ends with the report's path and its headline table."""
    import json
    import subprocess
    import sys

    out_dir = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "deploy.demo", "--out", str(out_dir),
                          "--no-progress"], capture_output=True, text=True, timeout=240,
                         cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"report: {out_dir}/report.md" in out.stdout
    assert "| completed |" in out.stdout and "| checks |" in out.stdout
    run = json.loads((out_dir / "run.json").read_text())
    assert run["complete"] and run["mode"] == "local"
    assert set(run["fault_mechanisms"]) == {"crash", "restart", "partition", "heal"}
    metrics = json.loads((out_dir / "metrics.json").read_text())["policies"]["predictive"]
    assert metrics["accepted"] > 20 and metrics["completed"] >= metrics["accepted"] - 2
    assert metrics["crashes_detected"] == 1
    for png in ("completion_cdf.png", "utilization.png", "inflight.png", "load_heatmap.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _restart_fast(c: LocalCluster, node_id: str) -> None:
    """SIGKILL the agent and start it again at once: same node id, address and config."""
    old = c.node(node_id)
    port = int(old.addr.rsplit(":", 1)[1])
    c.kill(node_id)
    seeds = [n.addr for n in c.nodes if n.running and n.node_id != node_id][:2]
    c.nodes.remove(old)
    old.log_file.close()
    c.spawn(port, seeds, node_id=node_id)
    c.wait_answering([c.node(node_id)], 10.0)


def test_a_fast_restart_of_the_owner_is_noticed_and_its_task_still_ends(
    cluster: LocalCluster,
) -> None:
    """Issue 9, finding 2: a crash and a restart within the detection time stranded a task the
    node owned (`running` forever, cancel "no owner answered"). Now the restart is a new
    generation: the cluster treats the old life as dead and the next replica takes over."""
    c = cluster
    rep = query(c.nodes[0].addr, "submit", 5, {"id": "own", "spec": {
        "argv": ["sh", "-c", "sleep 3; echo done"], "cpus": 1}})  # fmt: skip
    row = _wait(c.nodes[0].addr, "own", lambda r: r["state"] == "running")
    owner = rep["replicas"][0]  # the first live replica drives the record
    _restart_fast(c, owner)
    other = next(n for n in c.nodes if n.node_id not in (owner, row["node"]))
    done = _wait(other.addr, "own", lambda r: r["state"] in TERMINAL, timeout=30, c=c)
    assert done["state"] == "succeeded" and done["stdout"] == "done\n", (done, _logs(c))
    rows = c.members(other.node_id)
    me = next(r for r in rows if r["node"] == owner)
    assert me["status"] == "alive" and me["incarnation"] >> 20 > 0  # a new generation


def test_cancel_after_a_fast_restart_of_the_owner(cluster: LocalCluster) -> None:
    c = cluster
    rep = query(c.nodes[1].addr, "submit", 5, {"id": "long", "spec": {
        "argv": ["sleep", "60"], "cpus": 1}})  # fmt: skip
    row = _wait(c.nodes[1].addr, "long", lambda r: r["state"] == "running")
    owner = rep["replicas"][0]
    _restart_fast(c, owner)
    time.sleep(1.5)
    via = next(n for n in c.nodes if n.node_id != owner and n.running)
    ans = query(via.addr, "cancel", 10, {"id": "long"})
    assert ans["state"] == "cancelled", (ans, row, _logs(c))
