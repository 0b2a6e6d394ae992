"""The agent's own asyncio shell on the simulator's network model (no sockets): the transport
seam holds — three `Agent`s in one event loop converge, run a task, and see a partition."""

from __future__ import annotations

import asyncio

from agent.agent import Agent, AgentOptions
from agent.placement_config import PlacementConfig
from agent.resources import Capacity, LoadSample
from gossip.config import FAST_SWIM, SwimConfig
from scenarios.sim.agent_network import InProcessNetwork
from scenarios.sim.network import NetworkModel


class _Idle:
    def sample(self) -> LoadSample:
        return LoadSample(0.1, 0.2)


def _agent(net: InProcessNetwork, i: int, seeds: list[str]) -> Agent:
    addr = f"mem://n{i}"
    opts = AgentOptions(
        node_id=f"n{i}", bind=addr, advertise=addr, capacity=Capacity(2.0, 1 << 30),
        seeds=seeds, swim=SwimConfig(**FAST_SWIM), load_interval=0.2, forecaster="none",
        placement=PlacementConfig(heartbeat=0.3, report_retry=0.2),
    )  # fmt: skip
    return Agent(opts, net.transport(addr), sampler=_Idle())


async def _until(pred, timeout: float) -> bool:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return False


def test_agents_converge_run_a_task_and_see_a_partition_on_the_sim_network() -> None:
    async def main() -> None:
        net = InProcessNetwork(NetworkModel(latency=0.001, jitter=0.0005))
        agents = [_agent(net, 0, [])] + [_agent(net, i, ["mem://n0"]) for i in (1, 2)]
        runs = [asyncio.create_task(a.run()) for a in agents]
        try:
            async def views() -> list[dict[str, str]]:
                return [{r["node"]: r["status"] for r in await net.query(a.opts.advertise,
                                                                         "members")}
                        for a in agents]  # fmt: skip

            async def converged() -> bool:
                return all(set(v.values()) == {"alive"} and len(v) == 3 for v in await views())

            assert await _until(converged, 10.0), await views()
            rep = await net.query("mem://n1", "submit", {"id": "t", "spec": {"argv": ["true"]}})
            assert len(rep["replicas"]) == 3

            async def done() -> bool:
                row = await net.query("mem://n2", "status", {"id": "t"})
                return row["state"] == "succeeded"

            assert await _until(done, 10.0)
            net.model.partition(["mem://n0"], ["mem://n1", "mem://n2"])

            async def split() -> bool:
                v = await views()
                return v[0].get("n1") == "failed" and v[1].get("n0") == "failed"

            assert await _until(split, 10.0), await views()
            net.model.heal()
            assert await _until(converged, 20.0), await views()
            assert agents[0].transport.stats["dropped_network"] > 0
        finally:
            for a in agents:
                a.request_stop()
            await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 10.0)

    asyncio.run(main())
