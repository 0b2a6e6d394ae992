"""One typed list of effects: a node core returns what it decided in order, and the agent's shell
carries each out in that order, where it belongs."""

from __future__ import annotations

import json
import random
from pathlib import Path

from agent.agent import Agent, AgentOptions
from agent.effects import Reply
from agent.execution import StartTask, StopTask, TaskExit
from agent.messages import Award, AwardAck, TaskReport
from agent.node import NodeCore
from agent.resources import Capacity
from agent.tasks import TaskRecord, TaskSpec, TaskState
from agent.worker import AWARD_ACK_DELAY
from gossip.auth import Principal
from gossip.effects import Outgoing, ResetStream, StatusChange
from gossip.messages import (
    Gossip,
    GossipOnly,
    MemberUpdate,
    Message,
    Ping,
    ResourceRecord,
    Status,
    Sync,
    SyncReply,
)
from gossip.wire import decode

ME = "tcp://127.0.0.1:1"


def _node_with_peers() -> NodeCore:
    core = NodeCore("n0", "sim://n0", random.Random(1),
                    resources=ResourceRecord("n0", 0, cpus=4, memory=1 << 30))  # fmt: skip
    members = tuple(MemberUpdate(n, f"sim://{n}", 0, Status.ALIVE) for n in ("n0", "n1", "n2"))
    core.join(0.0, [])
    core.on_message(0.0, Message("n1", "sim://n1", 0, SyncReply(members, ())))
    return core


AWARDED = TaskRecord("t", TaskSpec(("x",)), TaskState.PLACED, version=3,
                     replicas=("n1", "n2", "n0"), attempt=1, node="n0", node_addr="sim://n0")


def _bodies(effects: list) -> list:
    return [type(e.msg.body) for e in effects if isinstance(e, Outgoing)]


def test_an_award_starts_the_run_and_confirms_it_once_the_run_is_still_going() -> None:
    core = _node_with_peers()
    effects = core.on_message(1.0, Message("n1", "sim://n1", 0, Award(AWARDED, 1)))
    assert effects == [StartTask("t", 1, AWARDED.spec)]
    assert core.next_wakeup() <= 1.0 + AWARD_ACK_DELAY
    acks = [e for e in core.on_tick(1.0 + AWARD_ACK_DELAY) if isinstance(e, Outgoing)
            and isinstance(e.msg.body, AwardAck)]  # fmt: skip
    assert [(e.addr, e.msg.body) for e in acks] == [("sim://n1", AwardAck("t", 1, True, 1.0))]


def test_a_run_that_ends_before_its_confirmation_is_due_reports_its_result_alone() -> None:
    core = _node_with_peers()
    core.on_message(1.0, Message("n1", "sim://n1", 0, Award(AWARDED, 1)))
    sent = _bodies(core.on_task_exit(1.01, TaskExit("t", 1, TaskState.SUCCEEDED)))
    sent += _bodies(core.on_tick(1.01)) + _bodies(core.on_tick(1.0 + AWARD_ACK_DELAY))
    assert TaskReport in sent and AwardAck not in sent, sent


def test_membership_tells_what_it_saw_in_the_list_of_the_call_that_saw_it() -> None:
    core = _node_with_peers()
    suspect = MemberUpdate("n2", "sim://n2", 0, Status.SUSPECT, "n1")
    effects = core.on_message(2.0, Message("n1", "sim://n1", 0, GossipOnly(Gossip((suspect,)))))
    assert effects == [ResetStream("sim://n2"), StatusChange(2.0, "n2", Status.SUSPECT, 0)]


class Fake:
    """A transport that writes down what the shell asked of it, in order."""

    endpoint, stats, peer_count = ME, {}, 0

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def send_datagram(self, addr: str, payload: bytes) -> bool:
        self.calls.append(("datagram", addr, type(decode(payload).body).__name__))
        return True

    def send(self, addr: str, payload: bytes) -> None:
        self.calls.append(("stream", addr, type(decode(payload).body).__name__))

    def reply(self, identity: tuple, payload: bytes) -> None:
        m = decode(payload)
        self.calls.append(("reply", identity, (m.seq, m.body.ok, m.body.data)))

    def reset_peer(self, addr: str) -> None:
        self.calls.append(("reset", addr, None))


def test_the_agent_carries_out_every_kind_of_effect_in_the_cores_order(tmp_path: Path) -> None:
    fake = Fake()
    log = tmp_path / "events.jsonl"
    agent = Agent(AgentOptions(node_id="me", bind=ME, advertise=ME, forecaster="none",
                               capacity=Capacity(cpus=1, memory=2**30), event_log=str(log)),
                  fake)  # fmt: skip
    agent._open_event_log()
    agent._clients[7] = ((b"client",), 3, Principal("@admin:ops", "admin", False))
    peer, other = "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"
    agent._apply([
        ResetStream(other),
        Outgoing(peer, Message("me", ME, 0, Sync(()))),
        StopTask("t-unknown", 1),  # nothing runs: a no-op for the executor
        Reply(7, True, {"id": "t"}, ""),
        Outgoing(other, Message("me", ME, 1, Ping("n3"))),
        StatusChange(12.5, "n3", Status.SUSPECT, 4),
        Reply(99, False, None, "nobody asked"),  # no client waits for it: dropped
    ])  # fmt: skip
    assert fake.calls == [
        ("reset", other, None),
        ("stream", peer, "Sync"),
        ("reply", (b"client",), (3, True, {"id": "t"})),
        ("datagram", other, "Ping"),
    ]
    agent.events.close()
    member = [e for e in map(json.loads, log.read_text().splitlines()) if e["ev"] == "member"]
    assert [(e["t"], e["peer"], e["status"], e["inc"]) for e in member] == [
        (12.5, "n3", "suspect", 4)]  # fmt: skip
