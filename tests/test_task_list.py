"""`agora tasks` on the simulator (issue 9, finding 10): the list answer is honest and always
sendable. It used to keep 1,000 of 10,000 tasks and say ``partial=False``, and one task with a
1.9 MB command made its node's `TaskListReply` too large to encode, so all of that node's tasks
disappeared behind "some agents did not answer".

Records are put straight into their owners' stores (as replication would leave them) and every
message goes through the wire encoder and decoder (`encode_messages`), as between real agents.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from agent.messages import MAX_LIST_RECORDS, TaskPut
from agent.tasks import MAX_ARG_LEN, MAX_OUTPUT_TAIL, TaskRecord, TaskSpec, TaskState
from gossip.messages import Message
from gossip.wire import MAX_MESSAGE_BYTES, encode
from scenarios.sim.placement_cluster import PlacementCluster

BIG_ARGV = ("echo", *("x" * MAX_ARG_LEN for _ in range(29)))  # 1.9 MB: within the task limits


def cluster(n: int = 3) -> PlacementCluster:
    c = PlacementCluster(n, seed=7)
    c.sim.encode_messages = True  # every message encoded and decoded, as between real agents
    c.run_for(0.5)
    return c


def hold(c: PlacementCluster, owner: int, count: int, start: int = 0,
         argv: tuple[str, ...] = ("work",),
         state: TaskState = TaskState.SUCCEEDED) -> None:  # fmt: skip
    """`count` records owned by node `owner` (first of their replica list), submitted at
    t = start, start + 1, ... (task ids follow the same numbers)."""
    core = c.core(c.addrs[owner])
    for i in range(start, start + count):
        rec = TaskRecord(f"t{i:06d}", TaskSpec(argv=argv, env={"SECRET": "s"}), state, 3,
                         core.node_id, (core.node_id,), attempt=1, node=core.node_id,
                         submitted=1_000.0 + i, finished=1_001.0 + i, stdout="o" * 100)  # fmt: skip
        assert core.placement.owner.hold(c.now, rec)


def list_tasks(c: PlacementCluster, via: int = 0, **kw: Any) -> dict[str, Any]:
    r = c.list_tasks(via, **kw)
    c.run_for(2.0)
    assert r.ok, r.reply
    assert c.sim.metrics().dropped["wire"] == 0  # nothing was too large to encode
    return r.data


def test_ten_thousand_tasks_are_all_listed() -> None:
    c = cluster()
    for owner in range(3):
        hold(c, owner, 3_334 if owner < 2 else 3_332, start=owner * 3_334)
    data = list_tasks(c)
    ids = [row["id"] for row in data["tasks"]]
    assert len(ids) == 10_000 == len(set(ids))
    assert ids == sorted(ids)  # oldest first
    assert data["partial"] is False and data["omitted"] == 0 and data["unanswered"] == 0


def test_more_than_the_maximum_says_how_many_were_left_out() -> None:
    c = cluster()
    hold(c, 1, 7_000)
    hold(c, 2, 5_000, start=7_000)
    data = list_tasks(c)
    ids = [row["id"] for row in data["tasks"]]
    assert len(ids) == MAX_LIST_RECORDS
    assert ids[0] == f"t{12_000 - MAX_LIST_RECORDS:06d}" and ids[-1] == "t011999"  # the newest
    assert data["partial"] is True and data["omitted"] == 12_000 - MAX_LIST_RECORDS


def test_limit_keeps_the_newest_and_counts_the_rest() -> None:
    c = cluster()
    hold(c, 0, 30)
    hold(c, 1, 30, start=30)
    hold(c, 2, 30, start=60, state=TaskState.FAILED)
    data = list_tasks(c, limit=25)
    assert [row["id"] for row in data["tasks"]] == [f"t{i:06d}" for i in range(65, 90)]
    assert data["partial"] is True and data["omitted"] == 65
    data = list_tasks(c, state=int(TaskState.SUCCEEDED), limit=50)
    assert [row["id"] for row in data["tasks"]] == [f"t{i:06d}" for i in range(10, 60)]
    assert data["omitted"] == 10


@pytest.mark.parametrize("huge", [1, 3])
def test_huge_commands_do_not_hide_their_nodes_tasks(huge: int) -> None:
    """With one 1.9 MB command the node's reply still fit in a message (on the simulator);
    with three it did not, and none of that node's 40 other tasks was listed."""
    c = cluster()
    hold(c, 1, 20)
    hold(c, 1, huge, start=20, argv=BIG_ARGV)
    hold(c, 1, 20, start=20 + huge)
    hold(c, 2, 5, start=40 + huge)
    data = list_tasks(c)
    rows = {row["id"]: row for row in data["tasks"]}
    assert len(rows) == 45 + huge and data["partial"] is False and data["omitted"] == 0
    big = rows["t000020"]["argv"]
    assert big[0] == "echo" and big[-1].endswith("...") and sum(map(len, big)) < 1_000
    assert all(row["stdout"] == "" and "env" not in row for row in rows.values())
    assert len(msgpack.packb(data)) < MAX_MESSAGE_BYTES  # the client's answer is sendable too
    # the full record still comes from `status`
    r = c.get("t000020", via=0)
    c.run_for(2.0)
    assert r.ok and tuple(r.data["argv"]) == BIG_ARGV


def test_many_huge_commands_fill_a_reply_and_the_rest_are_counted() -> None:
    """Summaries are small, but a reply is bounded in bytes too: labels and replica lists of
    the largest allowed size would not fit 10,000 to a message."""
    c = cluster()
    core = c.core(c.addrs[1])
    labels = {f"{k:0250d}": "v" * 250 for k in range(64)}
    for i in range(200):
        rec = TaskRecord(f"t{i:06d}", TaskSpec(argv=("work",), labels=labels),
                         TaskState.SUCCEEDED, 3, core.node_id, (core.node_id,),
                         submitted=1_000.0 + i)  # fmt: skip
        assert core.placement.owner.hold(c.now, rec)
    data = list_tasks(c)
    shown = len(data["tasks"])
    assert 0 < shown < 200 and data["omitted"] == 200 - shown and data["partial"] is True
    assert data["tasks"][-1]["id"] == "t000199"  # the newest are kept
    # the node left some out of its page; the entry agent may drop more to fit its answer
    assert 0 < core.placement.stats["list_records_left_out"] <= 200 - shown


def test_a_spec_whose_record_could_not_carry_its_output_is_refused() -> None:
    """A command near 4 MB was accepted, and its record no longer fit a message once its output
    tails were added: refused at submit instead, with the size in the message."""
    from agent.records import MAX_SPEC_BYTES, spec_problem

    def argv(total: int) -> tuple[str, ...]:
        n, rest = divmod(total, MAX_ARG_LEN)
        return ("sh", *["y" * MAX_ARG_LEN] * n, "y" * rest)

    assert spec_problem(TaskSpec(argv=argv(1_900_000))) == ""
    problem = spec_problem(TaskSpec(argv=argv(MAX_SPEC_BYTES)))
    assert "bytes encoded" in problem and str(MAX_SPEC_BYTES) in problem
    spec = TaskSpec(argv=argv(MAX_SPEC_BYTES - 1000))
    assert spec_problem(spec) == ""
    full = TaskRecord("t" * 256, spec, TaskState.FAILED, stdout="\U0001f600" * MAX_OUTPUT_TAIL,
                      stderr="\U0001f600" * MAX_OUTPUT_TAIL, reason="r" * 4096)  # fmt: skip
    encode(Message("n" * 256, "a" * 256, 1, TaskPut(full)))  # the worst case still fits
