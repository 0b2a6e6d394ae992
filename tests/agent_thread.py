"""An Agent on its own event loop in a background thread, for tests that talk to it over real
ZeroMQ sockets without the cost of a process (plain, or keyed with `cluster_key`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from agent.agent import Agent, AgentOptions
from agent.resources import Capacity
from deploy.local_cluster import free_ports
from gossip.config import FAST_SWIM, SwimConfig

FAST = SwimConfig(**{**FAST_SWIM, "leave_linger": 0.1})


class AgentThread:
    def __init__(self, node_id: str = "target", cluster_key: str = "",
                 seeds: list[str] | None = None, join_timeout: float = 3.0,
                 **opts: Any) -> None:  # fmt: skip
        port = free_ports(1)[0]
        self.addr = f"tcp://127.0.0.1:{port}"
        options = AgentOptions(
            node_id=node_id, bind=self.addr, advertise=self.addr,
            capacity=Capacity(cpus=2, memory=2**30), load_interval=0.2, swim=FAST,
            seeds=seeds or [], cluster_key=cluster_key, join_timeout=join_timeout, **opts,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.agent = Agent.start(options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.agent.run())
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.loop.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the agent's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        assert done.wait(5)
        return box[0]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.agent.request_stop)
            self.thread.join(5)
        assert not self.thread.is_alive()
