"""What one run of a scenario (one policy, one seed) saw, in one shape for both modes.

The simulator runner fills it from the simulated nodes' executors and cores; the local runner
fills it only from what the agents themselves expose — their JSON-lines event logs and their
answers to `status` queries — never from process memory. Checkers (`scenarios.checkers`) and
metrics (`scenarios.metrics`) read nothing else, so both modes are judged by the same code.

Times are seconds since the run's t = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scenarios.faults import FaultEvent

TERMINAL = ("succeeded", "failed", "cancelled", "rejected")


@dataclass(frozen=True)
class Record:
    """The newest copy of a task record the cluster returned at the end."""

    state: str
    node: str
    attempt: int
    exit_code: int
    submitted: float
    placed: float  # nan when never placed
    started: float
    finished: float


@dataclass
class TaskOutcome:
    task: str
    submitted: float  # when the runner submitted it
    accepted: bool  # the submit was acknowledged ok
    cpus: float
    memory: int
    expected: float
    deadline: float  # seconds after submission; 0 = none
    record: Record | None = None  # None: no agent holds a copy (or it was never accepted)
    error: str = ""  # why the submit failed
    replicas: tuple[str, ...] = ()  # the nodes holding its record, as the submit answered


@dataclass
class Run:
    """One run of one attempt on one node, as its node's executor saw it."""

    node: str
    task: str
    attempt: int
    start: float
    cpus: float
    memory: int
    gpus: int = 0
    end: float | None = None  # None: still running, or its node died with it
    state: str = ""
    exit_code: int | None = None


@dataclass(frozen=True)
class Commit:
    """A result an owner recorded on every live replica (it acknowledged the runner then)."""

    t: float
    committer: str
    task: str
    attempt: int
    runner: str
    state: str


@dataclass(frozen=True)
class MemberEvent:
    t: float
    observer: str
    peer: str
    status: str  # alive | suspect | failed | left


@dataclass(frozen=True)
class AppliedFault:
    event: FaultEvent
    t: float  # when it really took effect (local mode: after the signal or rule was applied)
    mechanism: str


@dataclass(frozen=True)
class RssSample:
    """One agent process's resident set size at one instant (local mode only)."""

    t: float
    node: str
    pid: int  # a restart is a new process: its memory starts afresh
    rss: int  # bytes


@dataclass
class Observation:
    policy: str
    seed: int
    mode: str
    nodes: list[str]  # node ids, index i is node n{i}
    capacity: dict[str, tuple[float, int, int]]  # cpus, memory, gpus
    duration: float  # the arrival and fault period
    end: float = 0.0  # when observation stopped
    tasks: list[TaskOutcome] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    members: list[MemberEvent] = field(default_factory=list)
    faults: list[AppliedFault] = field(default_factory=list)
    loads: list[tuple[float, str, float]] = field(default_factory=list)  # (t, node, load 0..1)
    # local mode: resident memory of each agent process, sampled by the runner
    rss: list[RssSample] = field(default_factory=list)
    messages_sent: int = 0  # agent-to-agent messages over the whole run
    detection_window: float = 10.0  # how long failure detection may take (false-failure rule)
    has_membership: bool = True  # False for the omniscient baseline: nothing to detect
    extra_problems: dict[str, list[str]] = field(default_factory=dict)  # from mode-specific checks
    complete: bool = True
    notes: list[str] = field(default_factory=list)

    def index(self, node: str) -> int:
        return self.nodes.index(node)

    def crash_times(self, node: str) -> list[float]:
        i = self.index(node)
        return sorted(f.t for f in self.faults if f.event.action == "crash" and i in f.event.nodes)
