"""The membership figures of issue 12 on hand-made observations: false failures split by loss,
re-merge time after a heal and the flapping after it. Each figure is computed by hand here, and
each test has a case where the figure must come out otherwise (a metric that cannot fail proves
nothing)."""

from __future__ import annotations

import math

import pytest

from scenarios import metrics, results
from scenarios.faults import FaultEvent
from scenarios.observation import AppliedFault, MemberEvent, Observation

ORDER = iter(range(10**6))


def obs_of(n: int, end: float = 100.0, window: float = 5.0) -> Observation:
    nodes = [f"n{i}" for i in range(n)]
    return Observation("p", 1, "local", nodes, {x: (4.0, 8 << 30, 0) for x in nodes}, end,
                       end=end, detection_window=window)  # fmt: skip


def fault(t: float, action: str, *nodes: int, groups: tuple[tuple[int, ...], ...] = (),
          value: float = 0.0, applied: float | None = None) -> AppliedFault:  # fmt: skip
    """A fault event scheduled at t (applied at `applied`, default t: local mode lags)."""
    e = FaultEvent(t, next(ORDER), action, tuple(nodes), groups, value)
    return AppliedFault(e, t if applied is None else applied, "test")


def ev(t: float, observer: str, peer: str, status: str) -> MemberEvent:
    return MemberEvent(t, observer, peer, status)


# ---------------------------------------------------------------------- all_alive_from


def test_all_alive_from_is_the_first_instant_every_pair_is_alive_again() -> None:
    members = [
        ev(10, "n0", "n1", "suspect"), ev(11, "n0", "n1", "failed"),
        ev(12, "n1", "n0", "failed"),
        ev(20, "n0", "n1", "alive"),
        ev(21, "n1", "n0", "alive"),
        ev(30, "n2", "n0", "failed"),  # n2 is not asked about below
        ev(5, "n0", "n0", "failed"),  # about itself: ignored
    ]  # fmt: skip
    nodes = ["n0", "n1"]
    assert metrics.all_alive_from(members, nodes, 0, 50) == 0  # nothing bad yet at t0
    assert metrics.all_alive_from(members, nodes, 15, 50) == 21
    assert metrics.all_alive_from(members, nodes, 15, 20.5) == math.inf  # n1 -> n0 still failed
    assert metrics.all_alive_from(members, nodes, 21, 50) == 21
    # with n2 asked about too, n2's view of n0 is failed from 30 on, and never alive again
    assert metrics.all_alive_from(members, [*nodes, "n2"], 15, 50) == 21
    assert metrics.all_alive_from(members, [*nodes, "n2"], 31, 50) == math.inf


def test_all_alive_from_takes_every_change_of_one_instant_before_judging() -> None:
    """Two observers' changes stamped with the same instant: the state after both counts, not
    the moment between them."""
    members = [ev(10, "n0", "n1", "failed"), ev(20, "n0", "n1", "alive"),
               ev(20, "n1", "n0", "failed")]  # fmt: skip
    assert metrics.all_alive_from(members, ["n0", "n1"], 15, 50) == math.inf
    members.append(ev(22, "n1", "n0", "suspect"))
    members.append(ev(23, "n1", "n0", "alive"))
    assert metrics.all_alive_from(members, ["n0", "n1"], 15, 50) == 23  # suspect is not alive


# ---------------------------------------------------------------------- heals


def split_and_heal() -> Observation:
    """n0, n1 | n2, n3 from 10 to 20 s (applied 0.1 s late), everyone declares the other side
    failed during it; back together by 22.5 s."""
    o = obs_of(4)
    o.faults = [fault(10, "partition", groups=((0, 1), (2, 3)), applied=10.1),
                fault(20, "heal", applied=20.1)]
    for a, b in ((0, 2), (0, 3), (1, 2), (1, 3)):
        o.members += [ev(14, f"n{a}", f"n{b}", "failed"), ev(14, f"n{b}", f"n{a}", "failed")]
        o.members += [ev(21, f"n{a}", f"n{b}", "alive"), ev(21, f"n{b}", f"n{a}", "alive")]
    o.members.append(ev(22.6, "n3", "n0", "alive"))  # the last view to come back...
    o.members.insert(0, ev(21.5, "n3", "n0", "failed"))  # ...after a relapse (a cross one)
    o.members.sort(key=lambda m: m.t)
    return o


def test_remerge_time_runs_from_the_applied_heal_to_the_last_view_coming_back() -> None:
    o = split_and_heal()
    [h] = metrics.heals(o)
    assert h.t == 20.1
    # at 21 every pair is alive (n3's relapse about n0 comes at 21.5): the first full re-merge
    assert h.remerge == pytest.approx(0.9)
    assert h.flaps == 0  # the relapse at 21.5 is about the other side, within the window


def test_remerge_waits_for_a_view_still_missing() -> None:
    o = split_and_heal()
    o.members = [m for m in o.members if not (m.t == 21 and m.observer == "n3"
                                             and m.peer == "n0")]  # fmt: skip
    [h] = metrics.heals(o)
    assert h.remerge == pytest.approx(22.6 - 20.1)


def test_declarations_after_a_heal_about_same_side_nodes_are_flaps() -> None:
    o = split_and_heal()
    o.members += [
        ev(23, "n0", "n1", "failed"),  # same side throughout: a flap
        ev(24, "n1", "n0", "failed"),  # and another
        ev(26, "n1", "n0", "alive"),
        ev(28, "n2", "n0", "failed"),  # other side, 8 s after the heal: a false failure, but
                                       # not about a node that stayed reachable
        ev(15, "n2", "n3", "failed"),  # same side but during the partition: not after the heal
        ev(17, "n2", "n3", "alive"),
        ev(24, "n0", "n1", "suspect"),  # a suspicion is not a declaration
    ]  # fmt: skip
    o.members.sort(key=lambda m: m.t)
    [h] = metrics.heals(o)
    assert h.flaps == 2
    m = metrics.compute(o)
    assert m["heal_flaps"] == 2 and m["heals_unmerged"] == 0
    assert m["false_failures"] == 4  # both flaps, n2 -> n0 at 28 and n2 -> n3 at 15


def test_a_crash_ends_the_heal_period_and_a_crashed_node_is_not_waited_for() -> None:
    o = split_and_heal()
    o.faults.append(fault(40, "crash", 3))
    o.members += [ev(45, "n0", "n1", "failed")]  # after the crash: outside the heal's period
    assert metrics.heals(o)[0].flaps == 0
    o = split_and_heal()
    o.faults.append(fault(22, "crash", 3))  # n3 down in the period: only n0..n2 must re-merge
    o.members = [m for m in o.members if m.observer != "n3" or m.t < 20]
    [h] = metrics.heals(o)
    assert h.remerge == pytest.approx(0.9)


def test_a_heal_never_followed_by_a_full_remerge() -> None:
    o = split_and_heal()
    o.members = [m for m in o.members if m.observer != "n3" or m.t < 20]  # n3 never hears back
    [h] = metrics.heals(o)
    assert h.remerge == math.inf
    m = metrics.compute(o)
    assert m["heals_unmerged"] == 1
    assert m["remerge_time_max"] is None and m["remerge_time_mean"] is None


def test_no_heal_no_heal_figures_and_a_heal_without_partition_is_none() -> None:
    o = obs_of(3)
    assert metrics.heals(o) == []
    o.faults = [fault(5, "heal")]
    assert metrics.heals(o) == []
    assert "remerge_time_max" not in metrics.compute(o)


def test_each_heal_of_several_partitions_is_judged_in_its_own_period() -> None:
    o = obs_of(2)
    o.faults = [fault(10, "partition", groups=((0,), (1,))), fault(20, "heal"),
                fault(40, "partition", groups=((0,), (1,))), fault(50, "heal")]  # fmt: skip
    o.members = [ev(15, "n0", "n1", "failed"), ev(23, "n0", "n1", "alive"),
                 ev(45, "n1", "n0", "failed"), ev(51, "n1", "n0", "alive")]  # fmt: skip
    assert [h.remerge for h in metrics.heals(o)] == [pytest.approx(3), pytest.approx(1)]
    m = metrics.compute(o)
    assert m["remerge_time_max"] == pytest.approx(3) and m["remerge_time_mean"] == pytest.approx(2)


# ---------------------------------------------------------------------- false failures, loss


def lossy_obs() -> Observation:
    """Loss on every node's links from 10 to 30 s (window 5 s), then none."""
    o = obs_of(3)
    o.faults = [fault(10, "loss", value=0.4), fault(30, "loss", value=0.0)]
    return o


def test_false_failures_in_and_after_loss() -> None:
    o = lossy_obs()
    o.members = [
        ev(5, "n0", "n1", "failed"),  # before any loss: neither in nor after
        ev(20, "n0", "n1", "failed"),  # in loss
        ev(33, "n1", "n2", "failed"),  # 3 s after it ended: the loss is within the window
        ev(40, "n2", "n0", "failed"),  # after
        ev(41, "n2", "n0", "suspect"),  # not a declaration
    ]  # fmt: skip
    assert metrics.false_failures(o) == (4, 0)  # loss justifies nothing: all four are false
    assert metrics.false_failures_by_loss(o) == (2, 1)
    m = metrics.compute(o)
    assert (m["false_failures_in_loss"], m["false_failures_after_loss"]) == (2, 1)


def test_loss_on_some_nodes_counts_for_their_links_only() -> None:
    o = obs_of(3)
    o.faults = [fault(10, "loss", 2, value=0.2)]  # n2's links, to the end
    o.members = [ev(20, "n0", "n1", "failed"), ev(21, "n0", "n2", "failed"),
                 ev(22, "n2", "n1", "failed")]  # fmt: skip
    assert metrics.false_failures_by_loss(o) == (2, 0)


def test_true_and_disturbed_declarations_are_not_split_by_loss() -> None:
    o = lossy_obs()
    o.faults.append(fault(15, "crash", 2))
    o.faults.append(fault(12, "pause", 1))
    o.members = [ev(18, "n0", "n2", "failed"),  # crashed: true
                 ev(20, "n1", "n0", "failed")]  # by a paused observer  # fmt: skip
    assert metrics.false_failures(o) == (0, 1)
    assert metrics.false_failures_by_loss(o) == (0, 0)


def test_loss_figures_only_with_loss_in_the_run() -> None:
    o = obs_of(3)
    o.members = [ev(20, "n0", "n1", "failed")]
    m = metrics.compute(o)
    assert m["false_failures"] == 1 and "false_failures_in_loss" not in m


def test_pooled_seeds_sum_the_counts_and_keep_the_worst_remerge() -> None:
    a, b = split_and_heal(), split_and_heal()
    b.seed = 2
    b.members = [m for m in b.members if not (m.t == 21 and m.observer == "n3"
                                             and m.peer == "n0")]  # fmt: skip
    b.members.append(ev(23, "n0", "n1", "failed"))
    pooled, _ = results.pooled([results.summary(a), results.summary(b)])
    assert pooled["heal_flaps"] == 1 and pooled["heals_unmerged"] == 0
    assert pooled["remerge_time_max"] == pytest.approx(2.5)
    assert pooled["remerge_time_mean"] == pytest.approx((0.9 + 2.5) / 2)


def test_all_alive_for_good_is_the_start_of_the_last_stretch_that_lasts() -> None:
    members = [ev(10, "n0", "n1", "failed"), ev(12, "n0", "n1", "alive"),  # back at 12...
               ev(14, "n1", "n0", "failed"), ev(17, "n1", "n0", "alive")]  # ...relapse till 17
    nodes = ["n0", "n1"]
    assert metrics.all_alive_from(members, nodes, 11, 50) == 12
    assert metrics.all_alive_from(members, nodes, 11, 50, for_good=True) == 17
    assert metrics.all_alive_from(members, nodes, 0, 50, for_good=True) == 17
    assert metrics.all_alive_from(members, nodes, 0, 9, for_good=True) == 0  # fine throughout
    assert metrics.all_alive_from(members, nodes, 11, 15, for_good=True) == math.inf
