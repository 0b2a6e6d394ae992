"""Runs the tasks awarded to this node as local subprocesses (the real side of `agent.execution`).

Why it is built this way:

- Runs are started with `agent.spawn` (posix_spawn, no fork of the agent; exit seen through a
  pidfd in the agent's own event loop, no thread per child), and the end of a run is just one
  more event the shell hands to the core (`core.on_task_exit`) through `on_exit`. Where that is
  not available (no setpriv or pidfd), asyncio's forking subprocesses do the same job.
- Each run is the leader of its own session / process group (``start_new_session=True``), so
  stop, timeout and shutdown kill everything the task spawned, not only its first process. When
  the first process exits on its own, whatever it left behind in its group is killed too: the
  core releases the task's resources at that moment, so nothing of it may keep running.
- stdout/stderr go into pipes the executor owns (not ``asyncio.subprocess.PIPE``): with PIPE,
  ``Process.wait()`` only returns once every holder of the pipes has closed them, so a background
  child would hide the exit of the task itself. Only the last ``output_limit`` bytes of each
  stream are kept, so a chatty task cannot grow the agent's memory and reports stay small.
- Nothing raises at the caller: a command that cannot start ends FAILED with a readable reason,
  reported through `on_exit` (asynchronously, never from inside `start()`) like any other end.
- A run dies with its agent: on Linux the child gets SIGKILL when the agent process dies
  (``PR_SET_PDEATHSIG``, set by setpriv or the fork path's preexec function), because the
  task's owner will re-place a run whose node it declared failed, and an orphan would keep
  using resources no ledger accounts for.
- No capacity checks: the placement core's ledger decides what runs here; the executor runs
  whatever it is handed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import spawn
from agent.execution import StartTask, TaskExit
from agent.tasks import TaskSpec, TaskState

log = logging.getLogger(__name__)

HISTORY = 256  # finished runs whose output tails are kept for `tails()`
READER_GRACE = 1.0  # after the group is gone, how long to wait for the pipes to reach EOF
SHUTDOWN_REASON = "agent shutting down"

Key = tuple[str, int]


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGKILL the child when the agent dies (Linux).

    Everything is looked up here, before any fork: the function run in the child only makes one
    C call, so it cannot deadlock on a lock another thread held at fork time."""
    if os.uname().sysname != "Linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)

    def set_pdeathsig() -> None:  # pragma: no cover - runs in the child
        prctl(1, sig)  # PR_SET_PDEATHSIG

    return set_pdeathsig


_PREEXEC = _pdeathsig_setter()


class _Tail(asyncio.Protocol):
    """The read end of one output pipe: keeps only the last `limit` bytes."""

    def __init__(self, limit: int, done: asyncio.Future[None]) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.total = 0  # bytes seen, kept or not
        self.done = done  # resolved when the pipe is closed (EOF or transport closed)

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        if self.limit <= 0:
            return
        self.buf += data
        extra = len(self.buf) - self.limit
        if extra > 0:
            del self.buf[:extra]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


@dataclass(eq=False, slots=True)
class _Run:
    task_id: str
    attempt: int
    spec: TaskSpec
    out: _Tail
    err: _Tail
    task: asyncio.Task[None] | None = None
    pid: int | None = None  # also the run's process group id
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    ending: tuple[TaskState, str] | None = None  # why it is being killed; the first cause wins
    killing: bool = False  # SIGTERM sent, SIGKILL scheduled
    kill_timer: asyncio.TimerHandle | None = None
    exited: bool = False  # the leader has exited (and was reaped)

    @property
    def label(self) -> str:
        return f"{self.task_id}#{self.attempt}"


def _spawn_error(e: BaseException, argv0: str, cwd: str | None) -> str:
    """A human reason for a failed exec (`subprocess` reports chdir errors with the cwd name)."""
    if cwd is not None and isinstance(e, OSError) and e.filename == cwd:
        if isinstance(e, FileNotFoundError):
            return f"working directory does not exist: {cwd}"
        if isinstance(e, NotADirectoryError):
            return f"working directory is not a directory: {cwd}"
        if isinstance(e, PermissionError):
            return f"permission denied: working directory {cwd}"
    if isinstance(e, FileNotFoundError):
        return f"command not found: {argv0}"
    if isinstance(e, PermissionError):
        return f"permission denied: {argv0}"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot start {argv0}: {e.strerror}"
    return f"cannot start {argv0}: {e}"


def _task_env(run: _Run) -> dict[str, str]:
    """The agent's environment, the task's own variables, and who it is: a run that may be
    repeated (at-least-once) can name its outputs after its attempt."""
    return {**os.environ, **run.spec.env, "AGORA_TASK_ID": run.task_id,
            "AGORA_ATTEMPT": str(run.attempt)}  # fmt: skip


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


class Executor:
    """Starts, stops and reports subprocess runs. Use from the agent's event loop only."""

    def __init__(
        self, on_exit: Callable[[TaskExit], None], output_limit: int = 65536,
        kill_grace: float = 3.0,
    ) -> None:  # fmt: skip
        if output_limit < 0:
            raise ValueError("output_limit must be >= 0")
        self._on_exit = on_exit
        self.output_limit = output_limit
        self.kill_grace = kill_grace
        self._live: dict[Key, _Run] = {}
        self._history: collections.OrderedDict[Key, tuple[str, str]] = collections.OrderedDict()
        self._closed = False

    # ------------------------------------------------------------------ commands

    def start(self, action: StartTask) -> None:
        """Launch a run. Never raises for a bad command; duplicates (live or recent) are no-ops."""
        key = (action.task_id, action.attempt)
        if key in self._live or key in self._history:
            log.debug("task %s#%d already started here; ignoring", *key)
            return
        loop = asyncio.get_running_loop()
        if self._closed:
            log.info("task %s#%d refused: %s", key[0], key[1], SHUTDOWN_REASON)
            ex = TaskExit(action.task_id, action.attempt, TaskState.FAILED, reason=SHUTDOWN_REASON)
            loop.call_soon(self._deliver, ex)
            return
        run = _Run(
            action.task_id, action.attempt, action.spec,
            _Tail(self.output_limit, loop.create_future()),
            _Tail(self.output_limit, loop.create_future()),
        )  # fmt: skip
        self._live[key] = run
        run.task = loop.create_task(self._run(run), name=f"run {run.label}")

    def stop(self, task_id: str, attempt: int) -> None:
        """Kill the run's process group (SIGTERM, SIGKILL after `kill_grace`); ends CANCELLED."""
        run = self._live.get((task_id, attempt))
        if run is None:
            log.debug("stop of unknown run %s#%d ignored", task_id, attempt)
            return
        log.info("stopping task %s", run.label)
        self._terminate(run, TaskState.CANCELLED, "stopped")

    async def close(self) -> None:
        """Kill every run, wait until each has ended and been reported; later starts fail."""
        self._closed = True
        runs = list(self._live.values())
        for run in runs:
            self._terminate(run, TaskState.FAILED, SHUTDOWN_REASON)
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ queries

    def tails(self, task_id: str) -> tuple[str, str] | None:
        """(stdout, stderr) tails of the latest attempt running or recently finished here."""
        best: tuple[int, _Run | tuple[str, str]] | None = None
        for (tid, attempt), run in self._live.items():
            if tid == task_id and (best is None or attempt > best[0]):
                best = (attempt, run)
        for (tid, attempt), tails in self._history.items():
            if tid == task_id and (best is None or attempt > best[0]):
                best = (attempt, tails)
        if best is None:
            return None
        found = best[1]
        if isinstance(found, _Run):
            return found.out.text(), found.err.text()
        return found

    def running(self) -> list[tuple[str, int]]:
        """(task_id, attempt) of every run not yet reported as ended."""
        return list(self._live)

    def pids(self) -> dict[tuple[str, int], int]:
        """Process (and process group) id of every live run that has started."""
        return {k: r.pid for k, r in self._live.items() if r.pid is not None}

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ internals

    async def _run(self, run: _Run) -> None:
        result: tuple[TaskState, int, str] = (TaskState.FAILED, 0, SHUTDOWN_REASON)
        try:
            result = await self._execute(run)
        except asyncio.CancelledError:  # the loop is going away: leave nothing running
            self._kill_group(run, signal.SIGKILL)
            raise
        except Exception as e:  # a bug here must not leave the run stuck in `running()`
            log.exception("task %s: executor error", run.label)
            self._kill_group(run, signal.SIGKILL)
            result = (TaskState.FAILED, 0, f"executor error: {e!r}")
        finally:
            self._cleanup(run)
            self._finish(run, *result)

    async def _execute(self, run: _Run) -> tuple[TaskState, int, str]:
        spec = run.spec
        if run.ending is not None:  # stopped (or shut down) before it could start
            return run.ending[0], 0, run.ending[1]
        if not spec.argv:
            return TaskState.FAILED, 0, "empty command"
        cwd = spec.cwd or None
        if cwd is not None and not os.path.isdir(cwd):
            what = "is not a directory" if os.path.exists(cwd) else "does not exist"
            return TaskState.FAILED, 0, f"working directory {what}: {cwd}"
        loop = asyncio.get_running_loop()

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            exited = await self._spawn(run, cwd, out_w, err_w)
        except (OSError, ValueError, TypeError) as e:
            os.close(out_r)
            os.close(err_r)
            reason = _spawn_error(e, spec.argv[0], cwd)
            log.info("task %s failed to start: %s", run.label, reason)
            return TaskState.FAILED, 0, reason
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)  # the child has its copies; EOF comes when the last holder exits
            os.close(err_w)
        files = [open(out_r, "rb", buffering=0), open(err_r, "rb", buffering=0)]
        try:
            for f, proto in zip(files, (run.out, run.err), strict=True):
                transport, _ = await loop.connect_read_pipe(lambda p=proto: p, f)
                run.transports.append(transport)  # the transport now owns the file
        except BaseException:
            for f in files[len(run.transports) :]:
                f.close()
            raise
        log.info("task %s started (pid %d): %s", run.label, run.pid, " ".join(spec.argv))

        if run.ending is not None:  # stop() or close() came while it was being spawned
            self._terminate(run, *run.ending)
        timer = None
        if spec.timeout > 0:
            timer = loop.call_later(spec.timeout, self._on_timeout, run)
        try:
            rc = await exited
        finally:
            if timer is not None:
                timer.cancel()
        run.exited = True
        self._kill_group(run, signal.SIGKILL)  # whatever the task left behind in its group
        done, _ = await asyncio.wait((run.out.done, run.err.done), timeout=READER_GRACE)
        if len(done) < 2:
            log.debug("task %s: output still held open by an escaped process", run.label)
        return self._outcome(run, rc)

    @staticmethod
    async def _spawn(run: _Run, cwd: str | None, out_w: int, err_w: int) -> asyncio.Future[int]:
        """Start the run (sets `run.pid`); returns its return code to come. The child is reaped
        whatever happens to the caller afterwards."""
        env = _task_env(run)
        if spawn.available():
            run.pid = spawn.spawn(run.spec.argv, env, cwd, out_w, err_w)
            return asyncio.ensure_future(spawn.wait(run.pid))
        proc = await asyncio.create_subprocess_exec(
            *run.spec.argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd,
            env=env, start_new_session=True, preexec_fn=_PREEXEC,
        )  # fmt: skip
        run.pid = proc.pid
        return asyncio.ensure_future(proc.wait())

    def _outcome(self, run: _Run, rc: int) -> tuple[TaskState, int, str]:
        if run.ending is not None:
            return run.ending[0], rc, run.ending[1]
        if rc == 0:
            return TaskState.SUCCEEDED, 0, ""
        if rc > 0:
            return TaskState.FAILED, rc, f"exit code {rc}"
        return TaskState.FAILED, rc, f"killed by signal {_signal_name(-rc)}"

    def _on_timeout(self, run: _Run) -> None:
        log.info("task %s timed out after %g s; killing it", run.label, run.spec.timeout)
        self._terminate(run, TaskState.FAILED, f"timed out after {run.spec.timeout:g} s")

    def _terminate(self, run: _Run, state: TaskState, reason: str) -> None:
        if run.exited:
            return  # it ended on its own; that is what gets reported
        if run.ending is None:
            run.ending = (state, reason)
        if run.pid is None or run.killing:
            return  # not spawned yet (`_execute` calls back once it is), or already dying
        run.killing = True
        self._kill_group(run, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        run.kill_timer = loop.call_later(self.kill_grace, self._kill_group, run, signal.SIGKILL)

    @staticmethod
    def _kill_group(run: _Run, sig: signal.Signals) -> None:
        if run.pid is None:
            return
        try:
            os.killpg(run.pid, sig)  # the run leads its own group: pgid == pid
        except ProcessLookupError:
            pass  # the whole group is already gone
        except OSError as e:
            log.debug("task %s: killpg(%s) failed: %r", run.label, sig.name, e)

    def _cleanup(self, run: _Run) -> None:
        if run.kill_timer is not None:
            run.kill_timer.cancel()
            run.kill_timer = None
        for t in run.transports:
            t.close()  # idempotent; frees the pipes even if something escaped with them
        run.transports.clear()

    def _finish(self, run: _Run, state: TaskState, code: int, reason: str) -> None:
        key = (run.task_id, run.attempt)
        self._live.pop(key, None)
        out, err = run.out.text(), run.err.text()
        self._history[key] = (out, err)
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        log.info("task %s %s%s", run.label, state.label, f": {reason}" if reason else "")
        self._deliver(TaskExit(run.task_id, run.attempt, state, code, reason, out, err))

    def _deliver(self, ex: TaskExit) -> None:
        try:
            self._on_exit(ex)
        except Exception:
            log.exception("on_exit failed for task %s#%d", ex.task_id, ex.attempt)
