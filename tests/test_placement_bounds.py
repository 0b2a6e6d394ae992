"""What a misbehaving member can make a node do in placement: awards only from the record's
live replicas, and a bounded number of negotiations (simulator, cores driven directly)."""

from __future__ import annotations

from test_placement_sim import make, settle

from agent.messages import Award, BidRequest
from agent.tasks import TaskRecord, TaskSpec


def test_an_award_from_a_node_that_holds_no_copy_of_the_record_runs_nothing() -> None:
    """Finding 1 on the core: the record names replicas; the award's sender is none of them,
    or is one of them speaking from another address."""
    c = make(3)
    victim, forger = c.addrs[0], c.addrs[1]
    core = c.core(victim)
    other_replica = c.core(c.addrs[2]).node_id
    for replicas in (("nobody",), (other_replica,)):
        rec = TaskRecord("evil", TaskSpec(("rm", "-rf", "/"), cpus=0.1), replicas=replicas,
                         attempt=1)  # fmt: skip
        c.inject(victim, forger, Award(rec, 1))
    c.run_for(0.1)
    assert core.placement.stats["refused_awards"] == 2
    assert not core.placement.worker.runs
    assert c.runs_of("evil") == []


def test_a_flood_of_bid_requests_opens_a_bounded_number_of_leases() -> None:
    c = make(4)
    victim, flooder = c.addrs[0], c.addrs[1]
    core = c.core(victim)
    limit = core.placement.ctx.config.max_leases
    c.pause(flooder)  # it never releases the yes-bids it is sent (an honest owner would)
    for i in range(limit + 500):  # each would fit: one byte of memory
        c.inject(victim, flooder, BidRequest(f"f{i}", 1, 1, 0.0, 1, 0, {}, 1.0))
    c.run_for(0.05)
    assert core.placement.ledger.lease_count == limit
    assert core.placement.stats["bids_refused_max_leases"] == 500
    c.run_for(5.0)  # the leases expire; the node negotiates normally again
    assert core.placement.ledger.lease_count == 0
    tid = "after-flood"
    c.submit(tid, TaskSpec(("true",), cpus=0.5, expected=1.0), via=2)
    settle(c)
    assert c.commits().get(tid)
