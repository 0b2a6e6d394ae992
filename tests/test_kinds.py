"""The message-kind registry: one registration per kind, refused twice, and what it says."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

import agent.messages
from agent.messages import PLACEMENT, Award, TaskPut
from gossip.kinds import MEMBERSHIP, KindConflict, kind_of, kinds, register, rides_datagram
from gossip.messages import GossipOnly, Ping, Query


@dataclass(frozen=True)
class Stranger:
    x: int


def _codec(b: object) -> list:
    return []


def test_the_protocol_numbers_are_the_registered_ones():
    assert {k.number: k.name for k in kinds()} == {
        1: "PING", 2: "ACK", 3: "PING_REQ", 4: "NACK", 5: "SYNC", 6: "SYNC_REPLY", 7: "GOSSIP",
        8: "SYNC_PUSH",
        32: "QUERY", 33: "QUERY_REPLY", 40: "TASK_PUT", 41: "TASK_PUT_ACK", 42: "TASK_GET",
        43: "TASK_GET_REPLY", 44: "TASK_LIST", 45: "TASK_LIST_REPLY", 46: "TASK_CANCEL",
        47: "TASK_CANCEL_REPLY", 50: "BID_REQUEST", 51: "BID", 52: "AWARD", 53: "AWARD_ACK",
        54: "RELEASE", 56: "TASK_REPORT", 57: "REPORT_ACK",
    }  # fmt: skip


def test_routing_and_handlers_come_from_the_registration():
    assert {k.name for k in kinds() if k.datagram} == {"PING", "ACK", "PING_REQ", "NACK", "GOSSIP"}
    assert rides_datagram(Ping("n")) and rides_datagram(GossipOnly(Ping("n").gossip))
    assert not rides_datagram(Query("stats")) and not rides_datagram(Stranger(1))
    assert kind_of(Ping("n")).handler == MEMBERSHIP
    assert {k.handler for k in kinds() if k.body.__module__ == "agent.messages"} == {PLACEMENT}


@pytest.mark.parametrize(("number", "name", "body"), [
    (1, "NEW", Stranger),  # PING's number
    (999, "NEW", TaskPut),  # TASK_PUT's class
    (999, "AWARD", Stranger),  # AWARD's name
])  # fmt: skip
def test_a_kind_registered_twice_is_refused_and_changes_nothing(number, name, body):
    before = kinds()
    with pytest.raises(KindConflict, match="registered twice"):
        register(number, name, body, _codec, _codec, handler=MEMBERSHIP)
    assert kinds() == before
    assert kind_of(Award(None, 0)).body is Award  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a registered message body"):
        kind_of(Stranger(1))


def test_a_module_that_registers_a_kind_again_fails_at_import():
    code = ("import importlib, agent.messages\n"
            "try:\n    importlib.reload(agent.messages)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout  # fmt: skip
    assert out.startswith("KindConflict message kind number 40 is registered twice"), out
    assert agent.messages.TaskPut is TaskPut  # this process was left alone


def test_the_gossip_layer_imports_nothing_of_the_agent():
    code = ("import importlib, pkgutil, sys, gossip\n"
            "for m in pkgutil.iter_modules(gossip.__path__):\n"
            "    importlib.import_module('gossip.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m == 'agent' or m.startswith('agent.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "[]"
