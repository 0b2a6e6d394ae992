"""The subprocess executor: exit reporting, start failures, bounded output, timeout, stop, close."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.execution import StartTask, TaskExit
from agent.executor import Executor
from agent.tasks import TaskSpec, TaskState


class Harness:
    def __init__(self, **kw: Any) -> None:
        self.exits: list[TaskExit] = []
        self.ex = Executor(self.exits.append, **kw)

    def start(self, task_id: str, *argv: str, attempt: int = 1, **spec: Any) -> None:
        self.ex.start(StartTask(task_id, attempt, TaskSpec(argv=tuple(argv), **spec)))

    async def exit_of(self, task_id: str, attempt: int = 1, timeout: float = 5.0) -> TaskExit:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.exits:
                if (e.task_id, e.attempt) == (task_id, attempt):
                    return e
            await asyncio.sleep(0.01)
        raise AssertionError(f"no exit for {task_id}#{attempt} within {timeout} s: {self.exits}")


def run(test: Callable[[Harness], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        h = Harness(**kw)
        try:
            await test(h)
        finally:
            await h.ex.close()

    asyncio.run(main())


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (orphans may wait a while to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


async def gone(*pids: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        await asyncio.sleep(0.02)
    return False


async def stdout_line(h: Harness, task_id: str, timeout: float = 3.0) -> str:
    """Wait until the running task printed a full first line, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tails = h.ex.tails(task_id)
        if tails and "\n" in tails[0]:
            return tails[0].split("\n", 1)[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"{task_id} printed nothing")


# ------------------------------------------------------------------ exits


def test_echo_succeeds_with_its_output() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "echo", "hello")
        e = await h.exit_of("t1")
        assert e.state == TaskState.SUCCEEDED and e.exit_code == 0 and e.reason == ""
        assert e.stdout == "hello\n" and e.stderr == ""
        assert h.ex.tails("t1") == ("hello\n", "")
        assert h.ex.running() == []

    run(t)


def test_nonzero_exit_fails_with_code_and_stderr() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "sh", "-c", "echo oops >&2; exit 3")
        e = await h.exit_of("t1")
        assert e.state == TaskState.FAILED and e.exit_code == 3
        assert e.reason == "exit code 3" and e.stderr == "oops\n"

    run(t)


def test_killed_by_signal() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "sh", "-c", "kill -9 $$")
        e = await h.exit_of("t1")
        assert e.state == TaskState.FAILED and e.exit_code == -9
        assert e.reason == "killed by signal SIGKILL"

    run(t)


def test_start_failures_are_reported_not_raised(tmp_path: Path) -> None:
    script = tmp_path / "x"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)  # not executable

    async def t(h: Harness) -> None:
        h.start("nf", "agora-no-such-cmd")
        h.start("perm", "./x", cwd=str(tmp_path))
        h.start("cwd", "echo", cwd=str(tmp_path / "nope"))
        h.start("empty")
        assert h.exits == []  # reported asynchronously, never from inside start()
        e = await h.exit_of("nf")
        assert e.state == TaskState.FAILED and e.reason == "command not found: agora-no-such-cmd"
        e = await h.exit_of("perm")
        assert e.state == TaskState.FAILED and e.reason == "permission denied: ./x"
        e = await h.exit_of("cwd")
        assert e.state == TaskState.FAILED
        assert e.reason == f"working directory does not exist: {tmp_path / 'nope'}"
        e = await h.exit_of("empty")
        assert e.state == TaskState.FAILED and e.reason == "empty command"
        # and the executor still works
        h.start("ok", "echo", "fine")
        assert (await h.exit_of("ok")).stdout == "fine\n"
        assert h.ex.running() == []

    run(t)


def test_env_and_cwd_are_passed(tmp_path: Path) -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "sh", "-c", 'echo "$AGORA_TEST_VAR $HOME"; pwd; '
                'echo "$AGORA_TASK_ID#$AGORA_ATTEMPT"',
                env={"AGORA_TEST_VAR": "42"}, cwd=str(tmp_path))  # fmt: skip
        e = await h.exit_of("t1")
        assert e.state == TaskState.SUCCEEDED
        assert e.stdout == (f"42 {os.environ.get('HOME', '')}\n{os.path.realpath(tmp_path)}\n"
                            "t1#1\n")

    run(t)


def test_output_is_bounded_to_the_last_bytes() -> None:
    code = (
        "import sys\n"
        "sys.stdout.write('a' * (1 << 20) + 'END')\n"
        "sys.stderr.write('é' * 5000)\n"  # 2 bytes each: the tail may start mid-character
    )

    async def t(h: Harness) -> None:
        h.start("t1", sys.executable, "-c", code)
        e = await h.exit_of("t1")
        assert e.state == TaskState.SUCCEEDED
        assert len(e.stdout) == 1000 and e.stdout.endswith("aaEND")
        assert len(e.stderr.encode()) <= 1000 + 2 and e.stderr.endswith("é" * 400)

    run(t, output_limit=1000)


def test_exception_in_on_exit_is_contained() -> None:
    async def main() -> None:
        got: list[TaskExit] = []

        def on_exit(e: TaskExit) -> None:
            got.append(e)
            raise RuntimeError("boom")

        ex = Executor(on_exit)
        ex.start(StartTask("a", 1, TaskSpec(argv=("true",))))
        ex.start(StartTask("b", 1, TaskSpec(argv=("no-such-command-xyz",))))
        for _ in range(300):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(e.task_id for e in got) == ["a", "b"]
        await ex.close()

    asyncio.run(main())


# ------------------------------------------------------------------ timeout, stop, close


def test_timeout_kills_the_run() -> None:
    async def t(h: Harness) -> None:
        t0 = time.monotonic()
        h.start("t1", "sleep", "30", timeout=0.5)
        e = await h.exit_of("t1", timeout=5)
        assert time.monotonic() - t0 < 2.0
        assert e.state == TaskState.FAILED and e.reason == "timed out after 0.5 s"
        assert e.exit_code < 0

    run(t)


def test_stop_cancels_the_whole_process_group() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "sh", "-c", "sleep 30 & echo $!; sleep 30")
        child = int(await stdout_line(h, "t1"))
        leader = h.ex.pids()[("t1", 1)]
        assert alive(child) and alive(leader)
        assert h.ex.running() == [("t1", 1)]
        t0 = time.monotonic()
        h.ex.stop("t1", 1)
        e = await h.exit_of("t1")
        assert time.monotonic() - t0 < 2.0
        assert e.state == TaskState.CANCELLED and e.reason == "stopped"
        assert await gone(leader, child)
        assert h.ex.running() == []
        h.ex.stop("t1", 1)  # already ended: no-op
        h.ex.stop("unknown", 7)
        await asyncio.sleep(0.05)
        assert len(h.exits) == 1

    run(t)


def test_stop_escalates_to_sigkill_after_the_grace() -> None:
    async def t(h: Harness) -> None:
        # ignoring SIGTERM is inherited by the sleep, so only SIGKILL ends them
        h.start("t1", "sh", "-c", "trap '' TERM; echo ready; sleep 30")
        await stdout_line(h, "t1")
        h.ex.stop("t1", 1)
        e = await h.exit_of("t1", timeout=3)
        assert e.state == TaskState.CANCELLED and e.exit_code == -9

    run(t, kill_grace=0.3)


def test_stop_right_after_start_never_leaves_a_process() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "sleep", "30")
        h.ex.stop("t1", 1)
        e = await h.exit_of("t1")
        assert e.state == TaskState.CANCELLED and e.reason == "stopped"
        assert h.ex.pids() == {}

    run(t)


def test_leftovers_of_a_finished_task_are_killed() -> None:
    async def t(h: Harness) -> None:
        t0 = time.monotonic()
        h.start("t1", "sh", "-c", "sleep 30 & echo $!")  # the child keeps stdout open
        e = await h.exit_of("t1")
        assert time.monotonic() - t0 < 2.0
        assert e.state == TaskState.SUCCEEDED
        assert await gone(int(e.stdout.strip()))

    run(t)


def test_close_kills_everything_and_refuses_new_starts() -> None:
    async def main() -> None:
        h = Harness(kill_grace=0.3)
        h.start("a", "sh", "-c", "sleep 30 & echo $!; sleep 30")
        h.start("b", "sh", "-c", "trap '' TERM; echo $$; sleep 30")
        pids = [int(await stdout_line(h, "a")), int(await stdout_line(h, "b"))]
        pids += list(h.ex.pids().values())
        t0 = time.monotonic()
        await h.ex.close()
        assert time.monotonic() - t0 < 2.0
        assert sorted(e.task_id for e in h.exits) == ["a", "b"]  # reported before close returns
        assert all(e.state == TaskState.FAILED and e.reason == "agent shutting down"
                   for e in h.exits)  # fmt: skip
        assert h.ex.running() == []
        assert await gone(*pids)
        h.start("c", "echo", "late")
        assert [e.task_id for e in h.exits] == ["a", "b"]  # not from inside start()
        e = await h.exit_of("c")
        assert e.state == TaskState.FAILED and e.reason == "agent shutting down"

    asyncio.run(main())


def test_duplicate_start_is_a_no_op(tmp_path: Path) -> None:
    log = tmp_path / "runs"

    async def t(h: Harness) -> None:
        argv = ("sh", "-c", f"echo run >> {log}; sleep 0.2")
        h.start("t1", *argv)
        h.start("t1", *argv)
        assert len(h.ex.running()) == 1
        await h.exit_of("t1")
        h.start("t1", *argv)  # a late duplicate of a finished run does not run it again
        await asyncio.sleep(0.3)
        assert len(h.exits) == 1 and log.read_text() == "run\n"
        h.start("t1", *argv, attempt=2)  # a new attempt does
        e = await h.exit_of("t1", attempt=2)
        assert e.state == TaskState.SUCCEEDED and log.read_text() == "run\nrun\n"

    run(t)


def test_tails_show_the_latest_attempt_while_running() -> None:
    async def t(h: Harness) -> None:
        h.start("t1", "echo", "first")
        await h.exit_of("t1")
        h.start("t1", "sh", "-c", "echo second; sleep 30", attempt=2)
        assert await stdout_line(h, "t1") == "second"
        assert h.ex.tails("other") is None

    run(t)


def test_the_forking_fallback_behaves_the_same(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """Where setpriv or pidfds are missing, runs are forked (asyncio subprocesses) instead."""
    from agent import spawn

    monkeypatch.setattr(spawn, "available", lambda: False)

    async def t(h: Harness) -> None:
        h.start("ok", "sh", "-c", "pwd; exit 3", cwd=str(tmp_path))
        e = await h.exit_of("ok")
        assert e.state == TaskState.FAILED and e.exit_code == 3
        assert e.stdout == f"{os.path.realpath(tmp_path)}\n"
        h.start("nf", "agora-no-such-cmd")
        assert (await h.exit_of("nf")).reason == "command not found: agora-no-such-cmd"
        h.start("long", "sleep", "30")
        await asyncio.sleep(0.2)
        h.ex.stop("long", 1)
        assert (await h.exit_of("long")).state == TaskState.CANCELLED

    run(t)


def test_spawned_runs_are_not_forked_and_start_no_thread() -> None:
    """posix_spawn + a pidfd: the agent's thread count does not grow with the runs in flight."""
    import threading

    from agent import spawn

    assert spawn.available()  # Linux with util-linux: the path every agent here takes

    async def t(h: Harness) -> None:
        before = threading.active_count()
        for i in range(5):
            h.start(f"s{i}", "sleep", "0.3")
        await asyncio.sleep(0.1)
        assert len(h.ex.pids()) == 5 and threading.active_count() == before
        for i in range(5):
            assert (await h.exit_of(f"s{i}")).state == TaskState.SUCCEEDED

    run(t)
