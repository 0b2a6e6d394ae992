"""The task commands of the `agora` CLI (submit, status, tasks, logs, cancel).

The parsing helpers of `deploy.task_args` are tested directly; the commands run in-process
against a fake agent: a ZeroMQ ROUTER on a random loopback port, in a thread, answering `Query`
messages with canned replies exactly as the real agent frames them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from agent.tasks import TaskSpec
from deploy import cli
from deploy.cli import build_parser, fmt_duration, format_task, format_tasks, main
from deploy.local_cluster import REPO_ROOT, free_ports
from deploy.task_args import (
    TASK_STATES,
    TaskArgError,
    build_spec,
    command_argv,
    new_task_id,
    parse_cpus,
    parse_duration,
    parse_env,
    parse_gpus,
    parse_labels,
    parse_memory,
    parse_state,
    parse_task_id,
    spec_args,
)
from gossip.messages import Message, Query, QueryReply
from gossip.wire import decode, encode

GiB = 1024**3


# ---------------------------------------------------------------- a fake agent


class Refuse(Exception):
    """Raised by a handler: the fake agent answers ok=False with this text."""


class Silent(Exception):
    """Raised by a handler: the fake agent does not answer at all."""


Handler = Callable[[str, dict], Any]


class FakeAgent:
    """A ROUTER that answers each Query with `handler(what, args)` (or an error / silence)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.queries: list[tuple[str, dict]] = []
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.addr = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(20, zmq.POLLIN):
                    continue
                ident, payload = sock.recv_multipart()
                msg = decode(payload)
                q = msg.body
                assert isinstance(q, Query)
                self.queries.append((q.what, dict(q.args)))
                try:
                    rep = QueryReply(True, self.handler(q.what, q.args))
                except Refuse as e:
                    rep = QueryReply(False, None, str(e))
                except Silent:
                    continue
                sock.send_multipart([ident, encode(Message("fake", self.addr, msg.seq, rep))])
        finally:
            sock.close(0)

    def whats(self) -> list[str]:
        return [w for w, _ in self.queries]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.term()


@pytest.fixture
def fake() -> Iterator[Callable[[Handler], FakeAgent]]:
    agents: list[FakeAgent] = []

    def start(handler: Handler) -> FakeAgent:
        agents.append(FakeAgent(handler))
        return agents[-1]

    yield start
    for a in agents:
        a.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`agora ARGV` in-process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agora: error: "), lines
    assert needle in lines[0], lines


NOW = time.time()


def row(**kw: Any) -> dict[str, Any]:
    """A task row shaped like `agent.requests.task_row`."""
    base: dict[str, Any] = {
        "id": "t-1", "state": "succeeded", "attempt": 1, "node": "node-2",
        "node_addr": "tcp://10.0.0.5:7946", "exit_code": 0, "reason": "",
        "submitted": NOW - 100, "placed": NOW - 99, "started": NOW - 98, "finished": NOW - 60,
        "replicas": ["node-1", "node-2", "node-3"], "version": 4,
        "argv": ["python", "train.py", "--epochs", "3"], "cpus": 2.0, "memory": 4 * GiB,
        "gpus": 0, "labels": {"zone": "eu"}, "deadline": None, "timeout": None,
        "expected": 60.0, "stdout": "", "stderr": "",
    }  # fmt: skip
    base.update(kw)
    return base


# ---------------------------------------------------------------- parsing helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0),
     ("1.5h", 5400.0), ("1h30m", 5400.0), (" 5M ", 300.0), ("0", 0.0), ("0.25", 0.25),
     (45, 45.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--deadline") == seconds


@pytest.mark.parametrize(
    ("text", "needle"),
    [("-5m", "must not be negative"), ("-1", "must not be negative"), ("abc", "expects a duration"),
     ("5y", "expects a duration"), ("", "expects a duration"), ("1e3", "expects a duration"),
     ("inf", "expects a duration"), ("nan", "expects a duration"), ("m", "expects a duration"),
     ("1.5.3h", "expects a duration"), ("99999999999d", "too long"), (-3, "non-negative")],
)  # fmt: skip
def test_bad_durations(text: str, needle: str) -> None:
    with pytest.raises(TaskArgError, match=needle) as e:
        parse_duration(text, "--timeout")
    assert "--timeout" in str(e.value)


def test_expected_run_time_must_be_positive() -> None:
    with pytest.raises(TaskArgError, match="--expect must be longer than zero"):
        build_spec(["ls"], expect="0s")
    assert build_spec(["ls"], expect="5m").expected == 300.0


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 * GiB), ("512MiB", 512 * 1024**2), ("2GB", 2 * 10**9), ("1048576", 1048576),
     ("1.5 GiB", int(1.5 * GiB)), ("0", 0)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("text", "needle"),
    [("4XB", "not a size: '4XB'"), ("-1GiB", "must not be negative"), ("lots", "not a size"),
     ("", "not a size"), ("4 G iB", "not a size")],
)  # fmt: skip
def test_bad_sizes(text: str, needle: str) -> None:
    with pytest.raises(TaskArgError, match=needle) as e:
        parse_memory(text)
    assert str(e.value).startswith("--mem")


def test_cpus_and_gpus() -> None:
    assert parse_cpus("2") == 2.0 and parse_cpus("0.5") == 0.5
    for bad in ("0", "-1", "nan", "inf", "-inf"):
        with pytest.raises(TaskArgError, match="--cpus must be a positive number"):
            parse_cpus(bad)
    with pytest.raises(TaskArgError, match="--cpus expects a number"):
        parse_cpus("two")
    with pytest.raises(TaskArgError, match="--cpus is too large"):
        parse_cpus("1e9")
    assert parse_gpus("0") == 0 and parse_gpus("2") == 2 and parse_gpus(" 1 ") == 1
    with pytest.raises(TaskArgError, match="--gpus must not be negative"):
        parse_gpus("-1")
    for bad in ("1.5", "x", ""):
        with pytest.raises(TaskArgError, match="--gpus expects a whole number"):
            parse_gpus(bad)


def test_labels_and_env() -> None:
    assert parse_labels(None) == {}
    assert parse_labels(["zone=eu", "disk=ssd", "zone=us"]) == {"zone": "us", "disk": "ssd"}
    assert parse_env(["A=b=c", "EMPTY=", " K =v"]) == {"A": "b=c", "EMPTY": "", "K": "v"}
    for bad in ("novalue", "=x", " =x"):
        with pytest.raises(TaskArgError, match="--label expects KEY=VALUE") as e:
            parse_labels(["ok=1", bad])
        assert repr(bad) in str(e.value)  # the message names the bad argument
        with pytest.raises(TaskArgError, match="--env expects KEY=VALUE"):
            parse_env([bad])
    with pytest.raises(TaskArgError, match="--label value of 'k' is too long"):
        parse_labels(["k=" + "x" * 300])
    with pytest.raises(TaskArgError, match="too many --label values"):
        parse_labels([f"k{i}=v" for i in range(100)])


def test_command() -> None:
    assert command_argv(["--", "python", "-c", "print(1)", "--cpus"]) == [
        "python", "-c", "print(1)", "--cpus"]  # fmt: skip
    assert command_argv(["ls", "-l"]) == ["ls", "-l"]
    for empty in (None, [], ["--"], ["--", ""]):
        with pytest.raises(TaskArgError, match="no command given"):
            command_argv(empty)


def test_build_spec() -> None:
    spec = build_spec(
        ["--", "python", "train.py"], cpus="2", mem="4GiB", gpus="1", labels=["zone=eu"],
        env=["SEED=3"], cwd="/srv/job", deadline="10m", timeout="1h", expect="5m",
    )  # fmt: skip
    assert spec == TaskSpec(
        argv=("python", "train.py"), cpus=2.0, memory=4 * GiB, gpus=1, labels={"zone": "eu"},
        env={"SEED": "3"}, cwd="/srv/job", timeout=3600.0, deadline=600.0, expected=300.0,
    )  # fmt: skip
    default = build_spec(["true"])
    assert (default.cpus, default.memory, default.gpus, default.expected) == (1.0, 0, 0, 60.0)
    assert (default.timeout, default.deadline, default.cwd) == (0.0, 0.0, "")
    with pytest.raises(TaskArgError, match="no command given"):
        build_spec([], cpus="1")


def test_spec_args_is_what_the_agent_gets() -> None:
    spec = build_spec(["sleep", "1"], cpus="0.5", mem="1GiB", labels=["a=b"], env=["X=1"])
    args = spec_args(spec)
    assert set(args) == {"argv", "cpus", "memory", "gpus", "labels", "env", "cwd", "timeout",
                         "deadline", "expected"}  # fmt: skip
    assert TaskSpec(**{**args, "argv": tuple(args["argv"])}) == spec
    # it crosses the wire unchanged inside a Query, and is JSON-friendly
    msg = decode(encode(Message("cli", "", 1, Query("submit", {"id": "t-x", "spec": args}))))
    assert isinstance(msg.body, Query) and msg.body.args["spec"] == args
    assert json.loads(json.dumps(args)) == args


def test_task_ids_and_states() -> None:
    a, b = new_task_id(), new_task_id()
    assert a != b and a.startswith("t-") and len(a) == 18
    assert parse_task_id("my-job-17") == "my-job-17"
    for bad, needle in (("", "must not be empty"), ("a b", "spaces"), ("x" * 300, "too long")):
        with pytest.raises(TaskArgError, match=needle):
            parse_task_id(bad)
    assert parse_state("RUNNING") == "running" and parse_state(" Failed ") == "failed"
    assert set(TASK_STATES) == {"pending", "placed", "running", "succeeded", "failed",
                                "cancelled", "rejected"}  # fmt: skip
    with pytest.raises(TaskArgError, match="unknown task state 'done'"):
        parse_state("done")


# ---------------------------------------------------------------- formatting


def test_fmt_duration() -> None:
    assert fmt_duration(None) == "-"
    assert fmt_duration(0.04) == "0.0 s" and fmt_duration(12.34) == "12.3 s"
    assert fmt_duration(-2) == "0.0 s"  # clock skew between nodes
    assert fmt_duration(183) == "3m03s" and fmt_duration(7500) == "2h05m"
    assert fmt_duration(97200) == "1d03h"


def test_status_block() -> None:
    r = row(deadline=60.0, timeout=3600.0, stdout="x" * 50)
    text = format_task(r, now=NOW)
    fields = dict(line.split(None, 1) if "  " in line else (line, "") for line in
                  (ln.replace("exit code", "exit_code") for ln in text.splitlines()))  # fmt: skip
    assert fields["state"].strip() == "succeeded"
    assert fields["node"].strip() == "node-2 (tcp://10.0.0.5:7946)"
    assert fields["attempt"].strip() == "1" and fields["exit_code"].strip() == "0"
    assert fields["queued"].strip() == "2.0 s" and fields["ran"].strip() == "38.0 s"
    assert "met, finished 40.0 s after submission" in fields["deadline"]
    assert fields["timeout"].strip() == "1h00m"
    assert "python train.py --epochs 3" in fields["command"]
    assert fields["needs"].strip() == "2 cpu, 4.0GiB; on nodes labelled zone=eu"
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 98)) in fields["started"]
    assert "xxxxx" not in text  # output is for `agora logs`

    late = format_task(row(deadline=30.0), now=NOW)
    assert "missed by 10.0 s" in late
    failed = format_task(row(state="failed", exit_code=3, reason="exit code 3", deadline=60.0),
                         now=NOW)  # fmt: skip
    assert "not met (task failed)" in failed and "reason     exit code 3" in failed
    running = format_task(row(state="running", exit_code=None, finished=None, deadline=50.0),
                          now=NOW)  # fmt: skip
    assert "ran        1m38s so far" in running and "missed, 50.0 s overdue" in running
    assert "exit code  -" in running
    killed = format_task(row(state="failed", exit_code=-9, reason="timed out after 10 s"), now=NOW)
    assert "exit code  -9" in killed and "reason     timed out after 10 s" in killed
    cancelled = format_task(row(state="cancelled", exit_code=0, reason="cancelled on request"))
    assert "exit code  -" in cancelled  # the record's 0 means nothing here
    pending = format_task(row(state="pending", node="", node_addr="", attempt=0, placed=None,
                              started=None, finished=None, exit_code=None, deadline=600.0),
                          now=NOW)  # fmt: skip
    assert "node       -" in pending and "queued     1m40s so far" in pending
    assert "8m20s left" in pending
    assert "deadline" not in format_task(row(), now=NOW)


def test_tasks_table() -> None:
    rows = [
        row(),
        row(id="t-2", state="running", node="node-3", exit_code=None, finished=None,
            argv=["bash", "-c", "for i in $(seq 1 1000); do echo $i; sleep 1; done"]),
        row(id="t-3", state="pending", node="", attempt=0, started=None, finished=None,
            exit_code=None, submitted=NOW - 5),
    ]  # fmt: skip
    lines = format_tasks(rows, now=NOW).splitlines()
    assert lines[0].split() == ["ID", "STATE", "NODE", "ATTEMPT", "CPUS", "EXIT", "AGE", "RAN",
                                "COMMAND"]  # fmt: skip
    assert lines[1].split()[:8] == ["t-1", "succeeded", "node-2", "1", "2", "0", "1m40s", "38.0"]
    assert lines[2].split()[:6] == ["t-2", "running", "node-3", "1", "2", "-"]
    assert "1m38s" in lines[2] and lines[2].endswith("...")
    assert len(lines[2].split("  ")[-1].strip()) <= cli.COMMAND_WIDTH
    assert lines[3].split()[:8] == ["t-3", "pending", "-", "0", "2", "-", "5.0", "s"]


# ---------------------------------------------------------------- commands against a fake agent


def test_submit_prints_only_the_id(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    agent = fake(lambda what, args: {"id": args["id"], "state": "pending", "existing": False,
                                     "replicas": ["a", "b", "c"]})  # fmt: skip
    code, out, err = run(capsys, "submit", "--agent", agent.addr, "--cpus", "2", "--mem", "4GiB",
                         "--gpus", "1", "--label", "zone=eu", "--env", "SEED=7", "--cwd", "/tmp",
                         "--deadline", "10m", "--timeout", "1h", "--expect", "5m", "--",
                         "python", "train.py", "--epochs", "3")  # fmt: skip
    assert code == 0, err
    assert err == ""
    [(what, args)] = agent.queries
    assert what == "submit"
    assert out == args["id"] + "\n" and args["id"].startswith("t-")
    assert args["spec"] == {
        "argv": ["python", "train.py", "--epochs", "3"], "cpus": 2.0, "memory": 4 * GiB,
        "gpus": 1, "labels": {"zone": "eu"}, "env": {"SEED": "7"}, "cwd": "/tmp",
        "timeout": 3600.0, "deadline": 600.0, "expected": 300.0,
    }  # fmt: skip


def test_submit_with_id_json_and_resubmission(capsys: pytest.CaptureFixture[str],
                                              fake: Any) -> None:  # fmt: skip
    seen: set[str] = set()

    def handler(what: str, args: dict) -> Any:
        existing = args["id"] in seen
        seen.add(args["id"])
        return {"id": args["id"], "state": "running" if existing else "pending",
                "existing": existing, "replicas": ["a"]}  # fmt: skip

    agent = fake(handler)
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "my-job-17", "--", "true")
    assert (code, out, err) == (0, "my-job-17\n", "")
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "my-job-17", "--", "true")
    assert code == 0 and out == "my-job-17\n"
    assert "my-job-17 already existed (state running)" in err
    assert agent.queries[0][1] == agent.queries[1][1]  # the very same request: idempotent
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "j2", "--json", "--", "true")
    assert code == 0 and json.loads(out) == {"id": "j2", "state": "pending", "existing": False,
                                             "replicas": ["a"]}  # fmt: skip


def test_submit_refused(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    def handler(what: str, args: dict) -> Any:
        raise Refuse("no node could ever run it: it needs 64 cpus")

    agent = fake(handler)
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--cpus", "64", "--", "true")
    assert out == ""
    one_line_error(code, err, "agora: error: no node could ever run it: it needs 64 cpus")


def test_submit_timeout_names_the_id_to_retry(capsys: pytest.CaptureFixture[str],
                                              fake: Any) -> None:  # fmt: skip
    def handler(what: str, args: dict) -> Any:
        raise Silent

    agent = fake(handler)
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--request-timeout", "0.3", "--",
                         "true")  # fmt: skip
    [(_, args)] = agent.queries
    assert out == ""
    one_line_error(code, err, f"submit again with --id {args['id']} to retry")
    assert "no answer from" in err
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--request-timeout", "0.3", "--id",
                         "mine", "--", "true")  # fmt: skip
    one_line_error(code, err, "submit again with --id mine to retry")


def _lifecycle(final: dict[str, Any]) -> Handler:
    """submit, then status answers pending, placed, running, running, then `final`."""
    states = iter(["pending", "placed", "running", "running"])

    def handler(what: str, args: dict) -> Any:
        if what == "submit":
            return {"id": args["id"], "state": "pending", "existing": False, "replicas": ["a"]}
        assert what == "status"
        state = next(states, None)
        if state is None:
            return row(id=args["id"], **final)
        return row(id=args["id"], state=state, exit_code=None, finished=None)

    return handler


def test_submit_wait_success(capsys: pytest.CaptureFixture[str], fake: Any,
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cli, "WAIT_POLL", 0.01)
    agent = fake(_lifecycle({"state": "succeeded"}))
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "w1", "--wait", "--", "true")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "w1"
    assert lines[1].startswith("w1 succeeded on node-2 (exit code 0, ran 38.0 s)")
    assert agent.whats() == ["submit"] + ["status"] * 5
    assert all(args == {"id": "w1"} for what, args in agent.queries[1:])
    # progress on stderr, one line per state change
    assert [ln for ln in err.splitlines() if ln.startswith("w1:")] == [
        "w1: pending",
        "w1: placed on node-2",
        "w1: running on node-2",
        "w1: succeeded on node-2",
    ]


def test_submit_wait_failure_exits_1(capsys: pytest.CaptureFixture[str], fake: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cli, "WAIT_POLL", 0.01)
    agent = fake(_lifecycle({"state": "failed", "exit_code": 3, "reason": "exit code 3"}))
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "w2", "--wait", "--", "false")
    assert code == 1
    assert out.splitlines()[1] == "w2 failed on node-2 (exit code 3, ran 38.0 s)"
    agent = fake(_lifecycle({"state": "cancelled", "reason": "cancelled by the user",
                             "exit_code": None, "started": None, "finished": None,
                             "node": ""}))  # fmt: skip
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "w3", "--wait", "--", "x")
    assert code == 1 and out.splitlines()[1] == "w3 cancelled: cancelled by the user"
    agent = fake(_lifecycle({"state": "failed", "exit_code": -9, "reason": "timed out after 1 s"}))
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "w5", "--wait", "--", "x")
    assert code == 1
    assert (
        out.splitlines()[1] == "w5 failed on node-2 (exit code -9, ran 38.0 s): timed out after 1 s"
    )


def test_submit_wait_json(capsys: pytest.CaptureFixture[str], fake: Any,
                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cli, "WAIT_POLL", 0.01)
    agent = fake(_lifecycle({"state": "succeeded"}))
    code, out, _ = run(capsys, "submit", "-a", agent.addr, "--id", "w4", "--wait", "--json",
                       "--", "true")  # fmt: skip
    assert code == 0
    final = json.loads(out)
    assert final["id"] == "w4" and final["state"] == "succeeded"


def test_submit_wait_polls_every_half_second(capsys: pytest.CaptureFixture[str],
                                             fake: Any) -> None:  # fmt: skip
    assert cli.WAIT_POLL == 0.5
    times: list[float] = []

    def handler(what: str, args: dict) -> Any:
        if what == "submit":
            return {"id": args["id"], "state": "pending", "existing": False, "replicas": []}
        times.append(time.monotonic())
        return row(id=args["id"], state="running" if len(times) < 3 else "succeeded")

    agent = fake(handler)
    code, _, _ = run(capsys, "submit", "-a", agent.addr, "--wait", "--", "true")
    assert code == 0 and len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.45 <= g < 1.5 for g in gaps), gaps


def test_submit_wait_gives_up_on_a_persistent_refusal(
    capsys: pytest.CaptureFixture[str], fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "WAIT_POLL", 0.01)

    def handler(what: str, args: dict) -> Any:
        if what == "submit":
            return {"id": args["id"], "state": "pending", "existing": False, "replicas": []}
        raise Refuse(f"unknown task id {args['id']!r}")

    agent = fake(handler)
    code, out, err = run(capsys, "submit", "-a", agent.addr, "--id", "gone", "--wait", "--", "x")
    assert code == 1 and out == "gone\n"
    assert err.strip().splitlines()[-1] == (
        "agora: error: unknown task id 'gone' (while waiting for task gone)"
    )
    assert agent.whats().count("status") == cli.WAIT_REFUSALS


def test_status(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    def handler(what: str, args: dict) -> Any:
        if args["id"] != "t-1":
            raise Refuse(f"unknown task id {args['id']!r}")
        return row(deadline=600.0)

    agent = fake(handler)
    code, out, err = run(capsys, "status", "t-1", "--agent", agent.addr)
    assert code == 0 and err == ""
    assert agent.queries == [("status", {"id": "t-1"})]
    assert "state      succeeded" in out and "node-2 (tcp://10.0.0.5:7946)" in out
    assert "deadline" in out and ": met" in out
    code, out, _ = run(capsys, "status", "t-1", "--agent", agent.addr, "--json")
    assert code == 0 and json.loads(out)["node"] == "node-2"
    code, out, err = run(capsys, "status", "nope", "--agent", agent.addr)
    assert out == "" and err == "agora: error: unknown task id 'nope'\n" and code == 1


def test_tasks(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    rows = [row(), row(id="t-2", state="running", exit_code=None, finished=None)]

    def handler(what: str, args: dict) -> Any:
        want = args["state"]
        return {"tasks": [r for r in rows if not want or r["state"] == want],
                "partial": want == "running"}  # fmt: skip

    agent = fake(handler)
    code, out, err = run(capsys, "tasks", "--agent", agent.addr)
    assert code == 0 and err == ""
    assert agent.queries[-1] == ("tasks", {"state": ""})
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("ID") and lines[2].startswith("t-2")
    code, out, err = run(capsys, "tasks", "--agent", agent.addr, "--state", "RUNNING")
    assert code == 0 and agent.queries[-1] == ("tasks", {"state": "running"})
    assert err == "(some agents did not answer: list may be partial)\n"
    assert len(out.splitlines()) == 2
    code, out, err = run(capsys, "tasks", "--agent", agent.addr, "--state", "cancelled")
    assert code == 0 and out == "" and "no cancelled tasks" in err
    code, out, _ = run(capsys, "tasks", "--agent", agent.addr, "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)["tasks"]] == ["t-1", "t-2"]
    n = len(agent.queries)
    code, out, err = run(capsys, "tasks", "--agent", agent.addr, "--state", "done")
    assert code == 2 and len(agent.queries) == n
    one_line_error(code, err, "argument --state: unknown task state 'done'")


def test_logs_of_a_finished_task(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    agent = fake(lambda what, args: row(stdout="epoch 1\nepoch 2\n", stderr="warning: x"))
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr)
    assert (code, out, err) == (0, "epoch 1\nepoch 2\n", "warning: x\n")
    assert agent.whats() == ["status"]
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr, "--stdout-only")
    assert (code, out, err) == (0, "epoch 1\nepoch 2\n", "")
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr, "--stderr-only")
    assert (code, out, err) == (0, "warning: x\n", "")
    quiet = fake(lambda what, args: row())
    code, out, err = run(capsys, "logs", "t-1", "--agent", quiet.addr)
    assert code == 0 and out == "" and "no output recorded" in err


def test_logs_of_a_running_task_come_from_its_node(capsys: pytest.CaptureFixture[str],
                                                   fake: Any) -> None:  # fmt: skip
    node = fake(lambda what, args: {"stdout": "step 41\nstep 42\n", "stderr": "", "running": True})
    agent = fake(lambda what, args: row(state="running", node_addr=node.addr, exit_code=None,
                                        finished=None, stdout="stale"))  # fmt: skip
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr)
    assert (code, out, err) == (0, "step 41\nstep 42\n", "")
    assert agent.whats() == ["status"]
    assert node.queries == [("logs", {"id": "t-1"})]


def test_logs_when_the_node_cannot_be_reached(capsys: pytest.CaptureFixture[str],
                                              fake: Any) -> None:  # fmt: skip
    (port,) = free_ports(1)
    agent = fake(lambda what, args: row(state="running", node_addr=f"tcp://127.0.0.1:{port}",
                                        exit_code=None, finished=None))  # fmt: skip
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr, "--timeout", "0.3")
    assert out == ""
    one_line_error(code, err, "cannot get the output of task t-1 from its node node-2")


def test_logs_of_a_task_that_has_not_started(capsys: pytest.CaptureFixture[str],
                                             fake: Any) -> None:  # fmt: skip
    agent = fake(lambda what, args: row(state="pending", node="", node_addr="", started=None,
                                        finished=None, exit_code=None))  # fmt: skip
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr)
    assert (code, out) == (0, "") and err == "task t-1 has not started yet (pending)\n"

    def node_handler(what: str, args: dict) -> Any:
        raise Refuse(f"task {args['id']} is not running here")

    node = fake(node_handler)
    agent = fake(lambda what, args: row(state="placed", node_addr=node.addr, started=None,
                                        finished=None, exit_code=None))  # fmt: skip
    code, out, err = run(capsys, "logs", "t-1", "--agent", agent.addr)
    assert (code, out) == (0, "") and "has not started yet (placed)" in err


def test_cancel(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    def handler(what: str, args: dict) -> Any:
        if args["id"] == "done":
            raise Refuse("task done already succeeded")
        return {"id": args["id"], "state": "cancelled"}

    agent = fake(handler)
    code, out, err = run(capsys, "cancel", "t-9", "--agent", agent.addr)
    assert (code, out, err) == (0, "cancelled t-9\n", "")
    assert agent.queries == [("cancel", {"id": "t-9"})]
    code, out, err = run(capsys, "cancel", "done", "--agent", agent.addr)
    assert out == ""
    one_line_error(code, err, "agora: error: task done already succeeded")


@pytest.mark.parametrize("cmd", [("status", "t-1"), ("tasks",), ("logs", "t-1"),
                                 ("cancel", "t-1")])  # fmt: skip
def test_unreachable_agent(capsys: pytest.CaptureFixture[str], cmd: tuple[str, ...]) -> None:
    (port,) = free_ports(1)
    code, out, err = run(capsys, *cmd, "--agent", f"127.0.0.1:{port}", "--timeout", "0.2")
    assert out == ""
    one_line_error(code, err, f"no answer from tcp://127.0.0.1:{port} within 0.2 s")


# ---------------------------------------------------------------- errors in a real process


def agora(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True,
                          text=True, timeout=30, cwd=REPO_ROOT)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("submit", "--cpus", "2"), "no command given"),
        (("submit", "--cpus", "2", "--"), "no command given"),
        (("submit", "--cpus", "0", "--", "ls"), "--cpus must be a positive number"),
        (("submit", "--cpus", "nan", "--", "ls"), "--cpus must be a positive number"),
        (("submit", "--mem", "4XB", "--", "ls"), "not a size: '4XB'"),
        (("submit", "--mem=-1GiB", "--", "ls"), "--mem must not be negative"),
        (("submit", "--gpus", "-1", "--", "ls"), "--gpus must not be negative"),
        (("submit", "--label", "zone", "--", "ls"), "--label expects KEY=VALUE"),
        (("submit", "--env", "=1", "--", "ls"), "--env expects KEY=VALUE"),
        (("submit", "--deadline", "soon", "--", "ls"), "--deadline expects a duration"),
        (("submit", "--timeout=-1h", "--", "ls"), "--timeout must not be negative"),
        (("submit", "--id", "a b", "--", "ls"), "--id must not contain spaces"),
        (("submit", "--request-timeout", "0", "--", "ls"), "--request-timeout: '0' is not a"),
        (("tasks", "--state", "finished"), "unknown task state 'finished'"),
        (("status",), "TASK_ID"),
        (("status", "t-1", "--timeout", "0"), "--timeout: '0' is not a number"),
        (("logs", "t-1", "--stdout-only", "--stderr-only"), "not allowed with"),
    ],
)
def test_user_errors_are_one_line(args: tuple[str, ...], needle: str) -> None:
    r = agora(*args)
    assert r.returncode == 2, r
    one_line_error(r.returncode, r.stderr, needle)
    assert r.stdout == ""


def test_submit_to_nobody_in_a_real_process() -> None:
    (port,) = free_ports(1)
    r = agora("submit", "--agent", f"127.0.0.1:{port}", "--request-timeout", "0.3", "--id", "j-1",
              "--", "true")  # fmt: skip
    assert r.returncode == 1
    one_line_error(r.returncode, r.stderr, "submit again with --id j-1 to retry")


def test_help_documents_every_task_option() -> None:
    parser = build_parser(plugins=False)
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("submit", "status", "tasks", "logs", "cancel"):
        sp = subs.choices[name]
        for action in sp._actions:
            assert action.help, f"agora {name} {action.option_strings} has no help"
    r = agora("submit", "--help")
    assert r.returncode == 0 and "--deadline" in r.stdout and "--wait" in r.stdout


# ---------------------------------------------------------------- numbers beyond the wire limits


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--mem", str(2**64), "--mem is too large"),  # msgpack cannot encode it: was a traceback
    ("--mem", str(2**63), "--mem is too large"),  # the agent's decoder refused it: "no answer"
    ("--mem", "9999999999999999999999TiB", "--mem is too large"),
    ("--gpus", str(2**64), "--gpus is too large"),
    ("--gpus", str(2**63), "--gpus is too large"),
])  # fmt: skip
def test_submit_numbers_beyond_the_wire_limits_are_refused_before_sending(
        capsys: pytest.CaptureFixture[str], fake: Any, flag: str, value: str,
        needle: str) -> None:  # fmt: skip
    """Issue 9, finding 10: `--mem`/`--gpus` >= 2^64 ended in a traceback, and 2^63 was sent and
    silently dropped by the agent. Both are now a usage error, and nothing reaches the agent."""
    agent = fake(lambda what, args: {"id": args["id"], "state": "pending"})
    code, out, err = run(capsys, "submit", "--agent", agent.addr, "--request-timeout", "0.5",
                         flag, value, "--", "true")  # fmt: skip
    assert code == 2 and out == ""
    one_line_error(code, err, needle)
    assert agent.queries == []


def test_submit_numbers_at_the_wire_limits_are_sent(capsys: pytest.CaptureFixture[str],
                                                    fake: Any) -> None:  # fmt: skip
    agent = fake(lambda what, args: {"id": args["id"], "state": "pending"})
    code, _, err = run(capsys, "submit", "--agent", agent.addr, "--mem", str(2**63 - 1),
                       "--gpus", str(2**63 - 1), "--", "true")  # fmt: skip
    assert code == 0, err
    (what, args), = agent.queries
    assert args["spec"]["memory"] == 2**63 - 1 and args["spec"]["gpus"] == 2**63 - 1


def test_tasks_says_what_was_left_out(capsys: pytest.CaptureFixture[str], fake: Any) -> None:
    """Issue 9, finding 10: `agora tasks` showed 1,000 of 10,000 tasks as if they were all.
    The agent now says how many it left out and how many nodes did not answer; so does the CLI,
    and `--limit` asks for fewer."""
    rows = [row(id=f"t-{i}", submitted=NOW - 100 + i) for i in range(5)]

    def handler(what: str, args: dict) -> Any:
        return {"tasks": rows, "omitted": 7, "unanswered": 2, "partial": True}

    agent = fake(handler)
    code, out, err = run(capsys, "tasks", "--agent", agent.addr)
    assert code == 0 and len(out.splitlines()) == 6
    assert err.splitlines() == [
        "(2 agents did not answer: the list may be incomplete)",
        "(7 older tasks not shown: at most 10000 are listed; see --limit and --state)",
    ]
    code, out, err = run(capsys, "tasks", "--agent", agent.addr, "--limit", "2", "--json")
    assert code == 0 and agent.queries[-1] == ("tasks", {"state": "", "limit": 2})
    data = json.loads(out)  # an agent that sent more than asked: the CLI keeps the newest
    assert [r["id"] for r in data["tasks"]] == ["t-3", "t-4"] and data["omitted"] == 10
    assert "10 older tasks not shown: at most 2 are listed" in err
    for bad in ("0", "-1", "10001", "1e3", "many"):
        n = len(agent.queries)
        code, out, err = run(capsys, "tasks", "--agent", agent.addr, "--limit", bad)
        assert code == 2 and len(agent.queries) == n
        one_line_error(code, err, "argument --limit")


@pytest.mark.slow
def test_tasks_through_real_agents_with_huge_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9, finding 10, through the CLI and real agents: tasks with 1.9 MB commands (each
    within the task limits) no longer hide the other tasks of the node that owns them."""
    from agent.tasks import MAX_ARG_LEN
    from deploy.local_cluster import LocalCluster

    huge = ["true", *("x" * MAX_ARG_LEN for _ in range(29))]
    with LocalCluster(1, log_level="WARNING", forecaster="none") as c:
        c.start()
        addr = c.nodes[0].addr
        ids = [f"big-{i}" for i in range(3)] + [f"small-{i}" for i in range(3)]
        for tid in ids:
            argv = huge if tid.startswith("big") else ["true"]
            code, _, err = run(capsys, "submit", "--agent", addr, "--id", tid, "--", *argv)
            assert code == 0, err
        code, out, err = run(capsys, "tasks", "--agent", addr, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert sorted(r["id"] for r in data["tasks"]) == sorted(ids)
        assert data["omitted"] == 0 and data["unanswered"] == 0 and err == ""
        code, out, _ = run(capsys, "status", "big-1", "--agent", addr, "--json")
        assert code == 0 and json.loads(out)["argv"] == huge  # the whole command, from status
