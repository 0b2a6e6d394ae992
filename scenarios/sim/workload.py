"""Simulated task execution with CPU contention, and the adapter hosting a node core on it.

`SimExecutor` runs the `StartTask`s a placement core emits as work that consumes virtual time.
A task reserving c_i CPUs needs ``work_of(spec)`` CPU-seconds (default ``c_i * spec.expected``),
i.e. ``work / c_i`` seconds at full speed. At time t the CPU left to agora is
``cpus * (1 - background.load(t))``; when the running tasks' c_i add up to more, every task
runs at the same speed ``max(min_speed, min(1, available / sum c_i))``. A task with cpus = 0
uses no CPU and needs ``spec.expected`` seconds at the common speed.

Integration is exact and piecewise: the state is anchored only at *intrinsic* instants (a start,
a stop, a completion, a timeout, a background change that alters the speed), never at the
times somebody happens to call `advance`, so results are bit-for-bit the same however often it
is polled. Progress is kept as one shared "full-speed seconds" clock V(t) = integral of speed;
a task finishes when V reaches V(start) + its full-speed duration, so completion order does not
depend on the speed and a completion lands exactly on its target.

`SimNode` wraps a node core (membership + placement) and its executor so the `Simulator` can
host them: it carries out the runs among the effects of every call into the core on the
executor, tells the core how runs ended, and feeds it its machine's load every `sample_step`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.effects import Reply
from agent.execution import StartTask, StopTask, TaskExit
from agent.tasks import TaskSpec, TaskState
from scenarios.sim.background import BackgroundTrace

MIN_SPEED = 0.05
TIMEOUT_EXIT_CODE = -9  # as if killed by SIGKILL
STOP_EXIT_CODE = -15  # as if terminated by SIGTERM


def _fmt_seconds(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True, slots=True)
class RunEnd:
    """One finished run, for scenario metrics: its exit and its virtual start/end times."""

    exit: TaskExit
    started: float
    ended: float
    cpus: float


class _Run:
    __slots__ = ("task_id", "attempt", "spec", "cpus", "started", "target", "deadline", "seq")

    def __init__(self, start: StartTask, cpus: float, started: float, target: float,
                 deadline: float, seq: int) -> None:  # fmt: skip
        self.seq = seq  # identifies this run's heap entries
        self.task_id = start.task_id
        self.attempt = start.attempt
        self.spec = start.spec
        self.cpus = cpus
        self.started = started
        self.target = target  # value of the progress clock V at which the work is done
        self.deadline = deadline  # absolute kill time; inf = no timeout


class SimExecutor:
    """Runs simulated tasks on a node with `cpus` CPUs and a replayed background load.

    All methods take the current virtual time, which must never go backwards. Runs that end
    inside `start` / `stop` / `load` calls are kept and returned by the next `advance`.
    """

    def __init__(
        self,
        cpus: float,
        background: BackgroundTrace | None = None,
        *,
        work_of: Callable[[TaskSpec], float] | None = None,
        min_speed: float = MIN_SPEED,
    ) -> None:
        if not (cpus > 0 and math.isfinite(cpus)):
            raise ValueError(f"cpus must be a finite number > 0, got {cpus}")
        if not 0 < min_speed <= 1:
            raise ValueError(f"min_speed must be in (0, 1], got {min_speed}")
        self.cpus = float(cpus)
        self.background = background if background is not None else BackgroundTrace.constant(0)
        self.work_of = work_of
        self.min_speed = min_speed
        self.stdout_bytes = 0  # chatty tasks: each run that ends writes this much output
        self.ended: list[RunEnd] = []  # every run that ended, in order
        self._runs: dict[tuple[str, int], _Run] = {}  # insertion order = start order
        self._by_target: list[tuple[float, int, tuple[str, int]]] = []  # lazy-deleted heaps
        self._by_deadline: list[tuple[float, int, tuple[str, int]]] = []
        self._seq = 0
        self._t = 0.0  # anchor: last intrinsic instant processed
        self._now = 0.0  # latest time seen (>= _t)
        self._v = 0.0  # progress clock V at the anchor
        self._speed = 1.0  # speed since the anchor
        self._demand = 0.0  # sum of the running tasks' cpus
        self._next_bg = math.inf  # next background change that alters the speed
        self._done: list[TaskExit] = []  # ended but not yet returned by advance()

    # ------------------------------------------------------------------ commands

    def start(self, now: float, action: StartTask) -> None:
        """Start a run. A run of the same (task, attempt) still going is left alone."""
        self._run_to(now)
        key = (action.task_id, action.attempt)
        if key in self._runs:
            return
        spec = action.spec
        c = max(0.0, float(spec.cpus))
        if c > 0:
            work = c * spec.expected if self.work_of is None else self.work_of(spec)
            duration = max(0.0, work) / c
        else:
            duration = max(0.0, spec.expected)
        self._anchor(now)
        deadline = now + spec.timeout if spec.timeout > 0 else math.inf
        self._seq += 1
        run = _Run(action, c, now, self._v + duration, deadline, self._seq)
        self._runs[key] = run
        heapq.heappush(self._by_target, (run.target, run.seq, key))
        if deadline != math.inf:
            heapq.heappush(self._by_deadline, (deadline, run.seq, key))
        self._set_demand()
        self._respeed()
        self._run_to(now)  # a run of zero work ends at once

    def stop(self, now: float, task_id: str, attempt: int) -> None:
        """Kill a run that is still going: it ends CANCELLED. Unknown or ended runs: no-op."""
        self._run_to(now)
        run = self._runs.get((task_id, attempt))
        if run is None:
            return
        self._anchor(now)
        self._end(run, TaskState.CANCELLED, STOP_EXIT_CODE, "stopped")
        self._respeed()

    def apply(self, now: float, action: StartTask | StopTask) -> None:
        if isinstance(action, StartTask):
            self.start(now, action)
        elif isinstance(action, StopTask):
            self.stop(now, action.task_id, action.attempt)
        else:
            raise TypeError(f"not an execution action: {action!r}")

    # ------------------------------------------------------------------ time

    def advance(self, now: float) -> list[TaskExit]:
        """Integrate up to `now`; return the runs that ended since the last call, in order."""
        self._run_to(now)
        done, self._done = self._done, []
        return done

    def next_event(self) -> float:
        """When the next run ends or the speed changes; inf if idle. Past (<= now) if runs
        that already ended wait to be returned by `advance`."""
        if self._done:
            return self._now
        return min(self._next_finish(), self._next_deadline(), self._next_bg)

    # ------------------------------------------------------------------ observation

    def load(self, now: float) -> float:
        """Total CPU utilisation at `now`: min(1, background + sum(c_i) / cpus)."""
        self._run_to(now)
        return min(1.0, self.background.load(now) + self._demand / self.cpus)

    def tasks_load(self, now: float) -> float:
        """Share of the node's CPUs the tasks really use at `now` (less than they reserved when
        contention slows them): what a real agent would measure of its own runs."""
        self._run_to(now)
        return min(1.0, self._demand * self._speed / self.cpus)

    @property
    def started_count(self) -> int:
        """Runs started so far (a start of a run still going is not counted)."""
        return self._seq

    @property
    def ended_count(self) -> int:
        return len(self.ended)

    def running(self) -> list[tuple[str, int]]:
        """(task_id, attempt) of the runs going as of the last call, in start order."""
        return list(self._runs)

    @property
    def demand(self) -> float:
        """Sum of the running tasks' cpus."""
        return self._demand

    def speed(self) -> float:
        """Current speed of every running task (1 = uncontended)."""
        return self._speed

    # ------------------------------------------------------------------ internals

    def _speed_at(self, bg: float) -> float:
        if self._demand <= 0:
            return 1.0
        avail = self.cpus * (1.0 - bg)
        return max(self.min_speed, min(1.0, avail / self._demand))

    def _anchor(self, t: float) -> None:
        """Move the anchor to t (>= _t) without crossing any event (caller guarantees)."""
        if t > self._t:
            self._v += self._speed * (t - self._t)
            self._t = t

    def _respeed(self) -> None:
        """Recompute the speed at the anchor and the next background change that alters it."""
        t = self._t
        bg = self.background
        self._speed = s = self._speed_at(bg.load(t))
        self._next_bg = math.inf
        if not self._runs or self._speed_at(bg.peak) == s == self._speed_at(bg.low):
            return  # no background value can change the speed
        tc = bg.next_change(t)
        for _ in range(len(bg)):  # one full period is enough: the trace loops
            if tc == math.inf:
                return
            if self._speed_at(bg.load(tc)) != s:
                self._next_bg = tc
                return
            tc = bg.next_change(tc)

    def _set_demand(self) -> None:
        # summed afresh in start order (no drift from adding and subtracting)
        self._demand = sum(r.cpus for r in self._runs.values())

    def _top(self, heap: list) -> tuple | None:
        runs = self._runs
        while heap:
            top = heap[0]
            run = runs.get(top[2])
            if run is not None and run.seq == top[1]:
                return top
            heapq.heappop(heap)  # stale: that run ended
        return None

    def _next_finish(self) -> float:
        top = self._top(self._by_target)
        if top is None:
            return math.inf
        return self._t + max(0.0, top[0] - self._v) / self._speed

    def _next_deadline(self) -> float:
        top = self._top(self._by_deadline)
        return math.inf if top is None else top[0]

    def _run_to(self, now: float) -> None:
        if now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = now
        while True:
            tf = self._next_finish()
            td = self._next_deadline()
            tb = self._next_bg
            t = min(tf, td, tb)
            if t > now:
                return
            if t == tf:
                self._t = t
                self._v = max(self._v, self._top(self._by_target)[0])  # land exactly on it
            else:
                self._anchor(t)
            while (top := self._top(self._by_target)) is not None and top[0] <= self._v:
                self._end(self._runs[top[2]], TaskState.SUCCEEDED, 0, "")
            while (top := self._top(self._by_deadline)) is not None and top[0] <= t:
                run = self._runs[top[2]]
                reason = f"timed out after {_fmt_seconds(run.spec.timeout)} s"
                self._end(run, TaskState.FAILED, TIMEOUT_EXIT_CODE, reason)
            self._respeed()

    def _end(self, run: _Run, state: TaskState, code: int, reason: str) -> None:
        del self._runs[(run.task_id, run.attempt)]
        self._set_demand()
        ex = TaskExit(run.task_id, run.attempt, state, exit_code=code, reason=reason,
                      stdout="x" * self.stdout_bytes)  # fmt: skip
        self._done.append(ex)
        self.ended.append(RunEnd(ex, run.started, self._t, run.cpus))


# ---------------------------------------------------------------------- hosting a core

_MAX_SETTLE = 10_000


class SimNode:
    """Hosts a node core and its `SimExecutor` in the `Simulator` (on_message / on_tick /
    next_wakeup).

    Every call into the core returns its effects (`agent.effects`); the host carries out runs
    to start or stop on the executor at that instant and hands client replies to `on_reply`,
    tells the core at once of runs that end (`core.on_task_exit`), repeats until both are quiet,
    and returns the rest — messages, stream resets, status changes — to the simulator, in
    order. The machine's load (`executor.load`) is fed to `core.observe_load` at
    ``first_sample + k * sample_step`` (a sample missed while the node was paused is not
    replayed: the next one is taken on resume).

    Scenario code reaches the core with ``sim.call(addr, on_core(fn))`` where
    ``fn(core, now) -> list[effect] | None``, which goes through this host. A plain
    ``sim.call(addr, lambda node, now: node.core.method(...))`` bypasses it: the simulator then
    refuses a run or a reply among the effects, which only a host can carry out.

    A crashed node is never called again by the simulator, so its simulated tasks just stop
    with it (no exit is reported); `executor` keeps its state as of the crash.
    """

    def __init__(
        self, core: Any, executor: SimExecutor, sample_step: float, first_sample: float = 0.0
    ) -> None:
        if not (sample_step > 0 and math.isfinite(sample_step)):
            raise ValueError(f"sample_step must be a finite number > 0, got {sample_step}")
        self.core = core
        self.executor = executor
        self.sample_step = float(sample_step)
        self.first_sample = float(first_sample)
        self._k = 0  # index of the next load sample
        self._next_sample = self.first_sample

    # ------------------------------------------------------------------ simulator interface

    def on_message(self, now: float, msg: Any) -> list:
        return self._settle(now, self.core.on_message(now, msg))

    def on_tick(self, now: float) -> list:
        out = self._settle(now, ())
        if now >= self._next_sample:
            self.core.observe_load(now, self.executor.load(now), self.executor.tasks_load(now))
            k = max(self._k + 1, math.floor((now - self.first_sample) / self.sample_step) + 1)
            while self.first_sample + k * self.sample_step <= now:
                k += 1
            self._k = k
            self._next_sample = self.first_sample + k * self.sample_step
            out += self._settle(now, ())
        if self.core.next_wakeup() <= now:
            out += self._settle(now, self.core.on_tick(now))
        return out

    def next_wakeup(self) -> float:
        return min(self.core.next_wakeup(), self.executor.next_event(), self._next_sample)

    def on_reply(self, now: float, reply: Reply) -> None:
        """A client reply of the core: a host that lets clients in (`PlacementCluster`'s)
        overrides this; here there is nobody to give it to."""
        raise RuntimeError(f"a client reply with no client to take it: {reply!r}"[:200])

    # ------------------------------------------------------------------ scenario access

    def run(self, now: float, fn: Callable[[Any, float], Any]) -> list:
        """fn(core, now) -> effects; carries them out (see the class doc), returns the rest."""
        return self._settle(now, fn(self.core, now) or ())

    # ------------------------------------------------------------------ internals

    def _settle(self, now: float, effects: Iterable[Any]) -> list:
        out: list = []
        core = self.core
        ex = self.executor
        for _ in range(_MAX_SETTLE):
            acted = False
            for e in effects:
                match e:
                    case StartTask() | StopTask():
                        ex.apply(now, e)
                        acted = True
                    case Reply():
                        self.on_reply(now, e)
                    case _:
                        out.append(e)  # the simulator's: messages, stream resets, status changes
            exits = ex.advance(now)
            if not acted and not exits:
                return out
            effects = [x for e in exits for x in core.on_task_exit(now, e) or ()]
        raise RuntimeError("core and executor keep producing actions and exits at one instant")


def on_core(fn: Callable[[Any, float], Any]) -> Callable[[SimNode, float], list]:
    """Wrap fn(core, now) for ``Simulator.call`` on a `SimNode`, settling its effects at once."""

    def call(node: SimNode, now: float) -> list:
        return node.run(now, fn)

    call.__name__ = getattr(fn, "__name__", "on_core")
    return call
