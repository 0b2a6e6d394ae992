"""Many agents for scale tests: several agents per process, and many such processes with Ray.

Two layers:

- `AgentHost` runs K agents in ONE process, as tasks of one asyncio event loop that runs in a
  background thread of the host. Each agent has its own `ZmqTransport` (its own bound port) and
  its own membership core, exactly as a lone `agora agent` process has; they only share the
  process, the event loop and one load sampler (they are on the same machine anyway). Its
  methods are synchronous and thread-safe, so the same class works directly in a test and as a
  Ray actor.
- `RayCluster` starts ``ceil(n / agents_per_actor)`` Ray actors, each an `AgentHost` (a Ray actor
  is a process of its own: hosting many agents per actor is what lets hundreds run on one
  machine), then the agents: agent 0 alone, the others joining through agent 0::

      with RayCluster(100, agents_per_actor=25, swim=SwimConfig(probe_interval=0.2)) as c:
          c.wait_converged(timeout=30)
          c.crash(7)      # agent 7 only: its sockets are closed abruptly, no leave is sent
          c.leave(8)      # agent 8 leaves gracefully (peers see "left")
          c.query(0, "members")

  The Ray runtime is started (``ray.init``) if it is not running yet, and shut down again on
  exit if this cluster started it; every actor is killed when the ``with`` block ends, even on
  error.

Agents bind ``tcp://HOST:*`` (ZeroMQ picks a free port, reported back as the advertised
address) unless `base_port` is given, in which case agent i binds ``base_port + i``.

"Crash" here is a crash of one agent, not of its process: the agent stops at once and closes
its sockets without leaving, so its peers see a silent endpoint and go through suspicion to
"failed", as for a SIGKILLed `agora agent`. The other agents of the same actor keep running.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import os
import resource
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.agent import Agent, AgentOptions
from agent.resources import LoadSample, LoadSampler
from deploy.client import ClientError, query
from deploy.config import config_from_dict, normalize_endpoint
from gossip.config import SwimConfig
from gossip.transport import TransportConfig, ZmqTransport

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_HOST = "127.0.0.1"
CALL_TIMEOUT = 30.0  # seconds a host method waits for its event loop
_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]")


class LaunchError(Exception):
    """Agents could not be started or did not come up (the message is for a human)."""


# ---------------------------------------------------------------- agents of one process


class SharedLoadSampler(LoadSampler):
    """One machine load sample shared by every agent of a process (at most one per `max_age`).

    psutil's CPU reading measures the time since the previous call in the process: K agents
    sampling on their own would each see a sliver of a second and publish noise.
    """

    def __init__(self, max_age: float = 0.5) -> None:
        super().__init__()
        self.max_age = max_age
        self._last: tuple[float, LoadSample] | None = None

    def sample(self) -> LoadSample:
        now = time.monotonic()
        if self._last is None or now - self._last[0] >= self.max_age:
            self._last = (now, super().sample())
        return self._last[1]


def options_from_spec(spec: Mapping[str, Any], host: str = DEFAULT_HOST) -> AgentOptions:
    """An `AgentOptions` from a dict with the keys of a node.toml file (see deploy/config.py).

    ``node_id`` is required. Without ``bind`` (or with port ``*`` or ``0``) the agent binds a
    port ZeroMQ picks on `host`; the advertised address is filled in once it is bound. ``log_level``
    is accepted and ignored (the host's log level applies to all its agents).
    """
    spec = dict(spec)
    node_id = spec.get("node_id")
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"an agent spec needs a node_id: {spec!r}")
    bind = spec.pop("bind", None) or f"tcp://{host}:*"
    if not isinstance(bind, str):
        raise ValueError(f"agent {node_id}: bind must be a string, got {bind!r}")
    if "://" not in bind:
        bind = "tcp://" + bind
    head, _, port = bind.rpartition(":")
    random_port = port in ("*", "0")
    if random_port:
        normalize_endpoint(head + ":1", f"agent {node_id}: bind")  # the host part is valid
        bind = head + ":*"
    else:
        bind = normalize_endpoint(bind, f"agent {node_id}: bind")
    cfg = config_from_dict(spec, src=f"agent {node_id}")
    cfg.bind = bind
    opts = cfg.to_options()
    if random_port and "advertise" not in spec:
        opts = dataclasses.replace(opts, advertise="")  # known once bound
    return opts


def _node_ip() -> str:
    """This machine's address as Ray knows it (for wildcard binds), else loopback."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - Ray missing or not in a Ray worker
        pass
    return "127.0.0.1"


@dataclass
class _Hosted:
    agent: Agent
    task: asyncio.Task
    state: str = "running"  # running | crashed | left | stopped | error
    error: str = ""


class AgentHost:
    """K agents in this process, driven by one event loop in a background thread.

    Every public method is synchronous, may be called from any thread, and runs its work on
    the host's loop (so it never races the agents). `close()` ends the loop thread.
    """

    def __init__(self, log_level: str = "WARNING", advertise_host: str | None = None) -> None:
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=log_level,
                format=f"%(asctime)s %(levelname)s [host {os.getpid()}] %(name)s: %(message)s",
            )
        self.advertise_host = advertise_host
        self._agents: dict[str, _Hosted] = {}
        self._sampler: SharedLoadSampler | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agora-agent-host", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ plumbing

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        if self._loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("this agent host is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _do(self, fn: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        async def wrapper() -> T:
            return fn()

        return self._call(wrapper(), timeout)

    def _hosted(self, node_id: str) -> _Hosted:
        try:
            return self._agents[node_id]
        except KeyError:
            raise KeyError(f"no agent {node_id!r} in this host") from None

    # ------------------------------------------------------------------ lifecycle

    def pid(self) -> int:
        return os.getpid()

    def start(self, specs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Bind and start one agent per spec (see `options_from_spec`); their advertised addresses.

        Returns once every agent is bound and running (not joined: see `info`). If one spec
        cannot be started, the agents started by this call are crashed and the error raised.
        """
        return self._call(self._start(list(specs)))

    async def _start(self, specs: list[Mapping[str, Any]]) -> list[str]:
        if self._sampler is None:
            self._sampler = SharedLoadSampler()
        started: list[_Hosted] = []
        try:
            for spec in specs:
                opts = options_from_spec(spec)
                if opts.node_id in self._agents:
                    raise ValueError(f"agent {opts.node_id!r} already exists in this host")
                transport = ZmqTransport.bind(opts.bind, opts.transport)
                if not opts.advertise:
                    head, _, port = transport.endpoint.rpartition(":")
                    host = head.split("://", 1)[1]
                    if host in _WILDCARD_HOSTS:
                        host = self.advertise_host or _node_ip()
                    opts = dataclasses.replace(opts, advertise=f"tcp://{host}:{port}")
                agent = Agent(opts, transport, sampler=self._sampler)
                task = asyncio.get_running_loop().create_task(
                    agent.run(), name=f"agent-{opts.node_id}"
                )
                hosted = _Hosted(agent, task)
                task.add_done_callback(lambda t, h=hosted: self._finished(h, t))
                self._agents[opts.node_id] = hosted
                started.append(hosted)
        except BaseException:
            for h in started:
                h.agent.crash()
            await asyncio.gather(*(h.task for h in started), return_exceptions=True)
            for h in started:
                self._agents.pop(h.agent.node_id, None)
            raise
        return [h.agent.opts.advertise for h in started]

    @staticmethod
    def _finished(h: _Hosted, task: asyncio.Task) -> None:
        if task.cancelled():
            h.state = "stopped"
        elif (e := task.exception()) is not None:
            h.state, h.error = "error", f"{type(e).__name__}: {e}"
            log.warning("agent %s stopped: %s", h.agent.node_id, h.error)
        elif h.agent.crashed:
            h.state = "crashed"
        elif h.state == "running":
            h.state = "left"

    def kill(self, node_id: str) -> None:
        """Crash ONE agent (not the process): close its sockets now, without leaving."""
        self._call(self._kill(node_id))

    async def _kill(self, node_id: str) -> None:
        h = self._hosted(node_id)
        h.agent.crash()
        await asyncio.wait({h.task}, timeout=5.0)

    def leave(self, node_id: str) -> None:
        """Graceful leave of one agent; returns after its `leave_linger`, once it has stopped."""
        self._call(self._leave(node_id))

    async def _leave(self, node_id: str) -> None:
        h = self._hosted(node_id)
        h.agent.request_stop()
        await asyncio.wait({h.task}, timeout=h.agent.opts.swim.leave_linger + 10.0)

    def stop_all(self, graceful: bool = True) -> None:
        """Stop every running agent: leave (all at once) or, with graceful=False, crash."""
        self._call(self._stop_all(graceful))

    async def _stop_all(self, graceful: bool) -> None:
        running = [h for h in self._agents.values() if not h.task.done()]
        for h in running:
            if graceful:
                h.agent.request_stop()
            else:
                h.agent.crash()
        if running:
            linger = max(h.agent.opts.swim.leave_linger for h in running)
            await asyncio.wait({h.task for h in running}, timeout=linger + 10.0)
        for h in running:
            if not h.task.done():  # pragma: no cover - a stuck agent
                h.task.cancel()
        await asyncio.gather(*(h.task for h in running), return_exceptions=True)

    def close(self) -> None:
        """Crash every agent still running, then end the loop thread. Idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                self._call(self._shutdown(), timeout=15.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        await self._stop_all(False)
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]  # e.g. transports' flushers
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    # ------------------------------------------------------------------ observing

    def info(self) -> list[dict[str, Any]]:
        """One dict per hosted agent: node_id, addr, state, error, joined, alive (members seen)."""

        def rows() -> list[dict[str, Any]]:
            return [
                {"node_id": nid, "addr": h.agent.opts.advertise, "state": h.state,
                 "error": h.error, "joined": h.agent.core.joined,
                 "alive": h.agent.core.live_count() if h.state == "running" else 0}
                for nid, h in self._agents.items()
            ]  # fmt: skip

        return self._do(rows)

    def statuses(self) -> dict[str, dict[str, int]]:
        """For every running agent: how many members it sees in each status."""

        def counts() -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for nid, h in self._agents.items():
                if h.state == "running":
                    c = collections.Counter(r["status"] for r in h.agent.member_rows())
                    out[nid] = dict(c)
            return out

        return self._do(counts)

    def status_of(self, node_id: str) -> dict[str, str | None]:
        """How every running agent (but `node_id` itself) currently sees `node_id`."""

        def look() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for nid, h in self._agents.items():
                if h.state == "running" and nid != node_id:
                    m = h.agent.core.member(node_id)
                    out[nid] = None if m is None else m.status.label
            return out

        return self._do(look)


# ---------------------------------------------------------------- many hosts with Ray


def swim_table(swim: SwimConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if swim is None:
        return {}
    if isinstance(swim, SwimConfig):
        return dataclasses.asdict(swim)
    return dataclasses.asdict(SwimConfig.from_dict(dict(swim)))  # validated


Views = dict[str, dict[str, str] | None]
"""observer node id -> {member node id -> status}, or None if the observer did not answer."""


def fds_needed(agents_in_process: int, cluster_size: int) -> int:
    """File descriptors one process hosting agents will need once every peer was contacted.

    Each agent keeps one ZeroMQ DEALER per peer (a socket mailbox and a TCP connection) and
    accepts the peers' connections on its ROUTER: about three descriptors per peer.
    """
    peers = min(cluster_size - 1, TransportConfig().max_peers)
    return agents_in_process * (3 * peers + 8) + 256


class RayCluster:
    """n agents in ceil(n / agents_per_actor) Ray actors; agent i joins through agent 0."""

    def __init__(
        self, n_agents: int, agents_per_actor: int = 25, swim: SwimConfig | None = None,
        base_port: int | None = None, *, host: str = DEFAULT_HOST, load_interval: float = 1.0,
        join_timeout: float = 60.0, log_level: str = "WARNING", num_cpus: int | None = None,
        query_timeout: float = 2.0, start_timeout: float | None = None,
    ) -> None:  # fmt: skip
        if n_agents < 1:
            raise ValueError("a cluster needs at least one agent")
        if agents_per_actor < 1:
            raise ValueError("agents_per_actor must be at least 1")
        if base_port is not None and not (0 < base_port and base_port + n_agents <= 65536):
            raise ValueError(f"base_port {base_port} + {n_agents} agents is not a valid port range")
        need = fds_needed(min(agents_per_actor, n_agents), n_agents)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if need > limit:
            raise ValueError(
                f"{agents_per_actor} agents per actor in a cluster of {n_agents} need about "
                f"{need} file descriptors per actor process, over this machine's limit of "
                f"{limit} (ulimit -Hn); use fewer agents per actor"
            )
        self.n = n_agents
        self.per_actor = agents_per_actor
        self.swim = swim
        self.base_port = base_port
        self.host = host
        self.load_interval = load_interval
        self.join_timeout = join_timeout
        self.log_level = log_level
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.query_timeout = query_timeout
        self.start_timeout = start_timeout or max(30.0, 0.3 * n_agents)
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self.addrs: list[str] = []
        self.node_ids = [f"agent{i}" for i in range(n_agents)]
        self.down: dict[int, str] = {}  # index -> "crashed" | "left"
        self._started_ray = False
        self._pool: ThreadPoolExecutor | None = None

    @property
    def n_actors(self) -> int:
        return math.ceil(self.n / self.per_actor)

    def actor_of(self, i: int) -> Any:
        return self.actors[i // self.per_actor]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RayCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spec(self, i: int, seeds: list[str]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "node_id": self.node_ids[i], "join": seeds, "join_timeout": self.join_timeout,
            "load_interval": self.load_interval, "swim": swim_table(self.swim),
        }  # fmt: skip
        port = "*" if self.base_port is None else str(self.base_port + i)
        spec["bind"] = f"tcp://{self.host}:{port}"
        return spec

    def start(self) -> float:
        """Start Ray (if needed), the actors and every agent; wait until all joined. Seconds."""
        import ray

        t0 = time.monotonic()
        try:
            if not ray.is_initialized():
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         ignore_reinit_error=True)  # fmt: skip
                self._started_ray = True
            host_cls = ray.remote(AgentHost).options(num_cpus=0, max_concurrency=4)
            self.actors = [host_cls.remote(log_level=self.log_level) for _ in range(self.n_actors)]
            self.pids = ray.get([a.pid.remote() for a in self.actors], timeout=self.start_timeout)
            first = ray.get(self.actors[0].start.remote([self._spec(0, [])]))[0]
            self.addrs = [first]
            seeds = [first]
            calls = []
            for k, actor in enumerate(self.actors):
                idx = range(max(1, k * self.per_actor), min(self.n, (k + 1) * self.per_actor))
                calls.append(actor.start.remote([self._spec(i, seeds) for i in idx]))
            for addrs in ray.get(calls, timeout=self.start_timeout):
                self.addrs += addrs
            self.wait_joined(self.start_timeout - (time.monotonic() - t0))
        except BaseException:
            self.stop(graceful=False)
            raise
        return time.monotonic() - t0

    def info(self) -> list[dict[str, Any]]:
        import ray

        return [row for rows in ray.get([a.info.remote() for a in self.actors]) for row in rows]

    def wait_joined(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        while True:
            rows = self.info()
            errors = [f"{r['node_id']}: {r['error']}" for r in rows if r["state"] == "error"]
            if errors:
                raise LaunchError("agents failed to start: " + "; ".join(errors[:5]))
            waiting = [r["node_id"] for r in rows if not r["joined"]]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise LaunchError(f"{len(waiting)} agents not joined after {timeout:.0f} s: "
                                  + ", ".join(waiting[:10]))  # fmt: skip
            time.sleep(0.1)

    def stop(self, graceful: bool = True) -> None:
        """Stop every agent (leave, or crash), kill the actors, shut Ray down if we started it."""
        import ray

        try:
            if self.actors:
                refs = [a.stop_all.remote(graceful) for a in self.actors]
                try:
                    ray.get(refs, timeout=30.0)
                except Exception as e:  # an actor already dead or stuck: kill it anyway
                    log.debug("stop_all failed: %r", e)
            for a in self.actors:
                try:
                    ray.kill(a)
                except Exception as e:  # pragma: no cover
                    log.debug("ray.kill failed: %r", e)
            self.actors = []
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
        finally:
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
            self._started_ray = False

    # ------------------------------------------------------------------ faults

    def crash(self, i: int) -> None:
        """Crash agent i (its sockets closed abruptly, no leave); its actor's others keep going."""
        import ray

        ray.get(self.actor_of(i).kill.remote(self.node_ids[i]))
        self.down[i] = "crashed"

    def leave(self, i: int) -> None:
        """Agent i leaves gracefully (returns once its linger is over)."""
        import ray

        ray.get(self.actor_of(i).leave.remote(self.node_ids[i]))
        self.down[i] = "left"

    # ------------------------------------------------------------------ observing

    @property
    def alive_indices(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.down]

    def query(self, i: int, what: str = "members", **kw: Any) -> Any:
        """deploy.client.query to agent i."""
        return query(self.addrs[i], what, timeout=kw.pop("timeout", self.query_timeout), **kw)

    def views(self, indices: Sequence[int] | None = None) -> Views:
        """{observer: {member: status}} by a `members` query to each agent in `indices`."""
        indices = self.alive_indices if indices is None else list(indices)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ray-cluster-query")

        def one(i: int) -> dict[str, str] | None:
            try:
                return {r["node"]: r["status"] for r in self.query(i)}
            except ClientError:
                return None

        return dict(zip((self.node_ids[i] for i in indices), self._pool.map(one, indices),
                        strict=True))  # fmt: skip

    def expected_alive(self) -> set[str]:
        return {self.node_ids[i] for i in self.alive_indices}

    def converged(self, views: Views) -> bool:
        want = self.expected_alive()
        return all(v is not None and {k for k, s in v.items() if s == "alive"} == want
                   for v in views.values())  # fmt: skip

    def wait_until(
        self, pred: Callable[[Views], bool], timeout: float, indices: Sequence[int] | None = None,
        interval: float = 0.2,
    ) -> float:  # fmt: skip
        """Poll `views(indices)` until `pred` holds; seconds waited, TimeoutError otherwise."""
        t0 = time.monotonic()
        while True:
            views = self.views(indices)
            if pred(views):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"condition not met after {timeout:.1f} s; "
                                   + _describe(views, self.expected_alive()))  # fmt: skip
            time.sleep(interval)

    def wait_converged(self, timeout: float = 30.0, indices: Sequence[int] | None = None) -> float:
        """Until every agent polled (all alive ones by default) sees exactly the live set."""
        return self.wait_until(self.converged, timeout, indices)

    def wait_status(self, i: int, status: str, timeout: float = 30.0,
                    indices: Sequence[int] | None = None) -> float:  # fmt: skip
        """Until every polled agent (all alive ones other than i by default) sees i as `status`."""
        node = self.node_ids[i]
        if indices is None:
            indices = [j for j in self.alive_indices if j != i]

        def ok(views: Views) -> bool:
            return all(v is not None and v.get(node) == status for v in views.values())

        return self.wait_until(ok, timeout, indices)


def _describe(views: Views, want: set[str]) -> str:
    silent = [k for k, v in views.items() if v is None]
    short = {k: len(want - {m for m, s in v.items() if s == "alive"})
             for k, v in views.items() if v is not None}  # fmt: skip
    short = {k: n for k, n in short.items() if n}
    return (
        f"{len(silent)} of {len(views)} polled agents did not answer, "
        f"{len(short)} miss live members (e.g. {dict(list(short.items())[:5])})"
    )
