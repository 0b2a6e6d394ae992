"""Fault timelines: [[faults]] resolved per seed into concrete events (so both modes and every
policy see the same faults), and `Disturbances`, which tells true failure declarations from
false ones."""

from __future__ import annotations

import pytest

from scenarios.faults import Disturbances, FaultEvent, resolve
from scenarios.spec import Scenario, parse


def scenario(faults: str, nodes: int = 10, duration: float = 100) -> Scenario:
    return parse(f"[scenario]\nduration = {duration}\n[cluster]\nnodes = {nodes}\n"
                 f"[workload]\nrate = 1\n{faults}", "f.toml")  # fmt: skip


# ---------------------------------------------------------------------- resolve


def test_named_targets_are_used_as_written() -> None:
    sc = scenario('[[faults]]\nat = 10\naction = "crash"\nnodes = ["n3", "n1"]\n')
    assert resolve(sc, 1) == [FaultEvent(10.0, 0, "crash", (3, 1))]
    assert resolve(sc, 2) == resolve(sc, 1)  # named targets do not depend on the seed


def test_fraction_is_seeded_deterministic_and_varies_by_seed() -> None:
    sc = scenario('[[faults]]\nat = 10\naction = "pause"\nfraction = 0.4\n', nodes=20)
    picks = {}
    for seed in range(1, 9):
        (ev,) = resolve(sc, seed)
        assert ev.action == "pause" and ev.t == 10.0
        assert len(ev.nodes) == 8 and len(set(ev.nodes)) == 8  # round(0.4 * 20), distinct
        assert list(ev.nodes) == sorted(ev.nodes) and all(0 <= i < 20 for i in ev.nodes)
        assert resolve(sc, seed) == [ev]  # same seed, same nodes
        picks[seed] = ev.nodes
    assert len(set(picks.values())) >= 6  # C(20, 8) choices: seeds give different nodes


def test_small_fraction_picks_at_least_one_node() -> None:
    sc = scenario('[[faults]]\nat = 1\naction = "crash"\nfraction = 0.01\n', nodes=10)
    (ev,) = resolve(sc, 3)
    assert len(ev.nodes) == 1


def test_two_faults_with_fractions_draw_independently() -> None:
    """Each fault has its own stream: adding a fault does not change the earlier one's nodes."""
    one = scenario('[[faults]]\nat = 10\naction = "crash"\nfraction = 0.3\n', nodes=30)
    two = scenario('[[faults]]\nat = 10\naction = "crash"\nfraction = 0.3\n'
                   '[[faults]]\nat = 20\naction = "pause"\nfraction = 0.3\n', nodes=30)
    assert resolve(two, 5)[0] == resolve(one, 5)[0]


def test_crash_with_restart_half_restarts_half_after_a_delay() -> None:
    sc = scenario('[[faults]]\nat = 40\naction = "crash"\nfraction = 0.4\nrestart = 0.5\n'
                  "restart_after = [0.5, 10]\n", nodes=20)  # fmt: skip
    for seed in (1, 2, 3):
        events = resolve(sc, seed)
        crash = events[0]
        assert crash.action == "crash" and crash.t == 40.0 and len(crash.nodes) == 8
        restarts = [e for e in events if e.action == "restart"]
        assert len(restarts) == 4 and len(events) == 5
        restarted = [e.nodes[0] for e in restarts]
        assert all(len(e.nodes) == 1 for e in restarts)  # one node each, its own delay
        assert len(set(restarted)) == 4 and set(restarted) <= set(crash.nodes)
        assert all(40.5 <= e.t <= 50.0 for e in restarts)
        assert len({e.t for e in restarts}) == 4  # delays drawn per node
        assert resolve(sc, seed) == events


def test_crash_restart_fixed_delay() -> None:
    sc = scenario('[[faults]]\nat = 15\naction = "crash"\nnodes = ["n3"]\nrestart = 1.0\n'
                  "restart_after = [3, 3]\n", nodes=8)  # fmt: skip
    assert resolve(sc, 1) == [FaultEvent(15.0, 0, "crash", (3,)),
                              FaultEvent(18.0, 1, "restart", (3,))]  # fmt: skip


def test_crash_without_restart_stays_down() -> None:
    sc = scenario('[[faults]]\nat = 15\naction = "crash"\nnodes = ["n3", "n4"]\n')
    assert [e.action for e in resolve(sc, 1)] == ["crash"]


def test_pause_with_duration_schedules_resume() -> None:
    sc = scenario('[[faults]]\nat = 10\naction = "pause"\nnodes = ["n2", "n5"]\n'
                  "duration = 7.5\n")  # fmt: skip
    assert resolve(sc, 1) == [FaultEvent(10.0, 0, "pause", (2, 5)),
                              FaultEvent(17.5, 1, "resume", (2, 5))]  # fmt: skip


def test_pause_without_duration_is_not_undone() -> None:
    sc = scenario('[[faults]]\nat = 10\naction = "pause"\nnodes = ["n2"]\n')
    assert [e.action for e in resolve(sc, 1)] == ["pause"]


def test_partition_groups_with_duration_schedules_heal() -> None:
    sc = scenario('[[faults]]\nat = 20\naction = "partition"\ngroups = [["n0", "n1"], '
                  '["n2", "n3", "n4"]]\nduration = 30\n', nodes=5)  # fmt: skip
    assert resolve(sc, 1) == [FaultEvent(20.0, 0, "partition", groups=((0, 1), (2, 3, 4))),
                              FaultEvent(50.0, 1, "heal")]  # fmt: skip


def test_partition_by_nodes_cuts_them_from_the_rest() -> None:
    sc = scenario('[[faults]]\nat = 20\naction = "partition"\nnodes = ["n4", "n1"]\n', nodes=6)
    (ev,) = resolve(sc, 1)
    assert ev.groups == ((4, 1), (0, 2, 3, 5))


def test_partition_by_fraction_is_seeded() -> None:
    sc = scenario('[[faults]]\nat = 20\naction = "partition"\nfraction = 0.5\n', nodes=10)
    (ev,) = resolve(sc, 7)
    a, b = ev.groups
    assert len(a) == 5 and sorted(a + b) == list(range(10))
    assert resolve(sc, 7) == [ev]


@pytest.mark.parametrize(("action", "key", "value"), [("loss", "rate", 0.3),
                                                      ("delay", "seconds", 0.05)])
def test_loss_and_delay_with_duration_are_undone(action: str, key: str, value: float) -> None:
    sc = scenario(f'[[faults]]\nat = 5\naction = "{action}"\n{key} = {value}\nduration = 10\n'
                  f'[[faults]]\nat = 30\naction = "{action}"\nnodes = ["n1"]\n{key} = {value}\n')
    assert resolve(sc, 1) == [
        FaultEvent(5.0, 0, action, (), value=value),  # no targets: every node
        FaultEvent(15.0, 1, action, (), value=0.0),
        FaultEvent(30.0, 2, action, (1,), value=value),  # stays until the end
    ]


def test_events_are_sorted_by_time_ties_in_file_order() -> None:
    sc = scenario('[[faults]]\nat = 50\naction = "crash"\nnodes = ["n0"]\n'
                  '[[faults]]\nat = 10\naction = "pause"\nnodes = ["n1"]\nduration = 40\n'
                  '[[faults]]\nat = 50\naction = "heal"\n'
                  '[[faults]]\nat = 5\naction = "crash"\nnodes = ["n2"]\nrestart = 1\n'
                  "restart_after = [100, 100]\n", duration=100)  # fmt: skip
    events = resolve(sc, 1)
    assert [(e.t, e.action) for e in events] == [
        (5.0, "crash"), (10.0, "pause"), (50.0, "crash"), (50.0, "resume"), (50.0, "heal"),
        (105.0, "restart"),  # a restart may fall after the run's duration (in the drain)
    ]
    assert events == sorted(events)
    ties = [e.order for e in events if e.t == 50.0]
    assert ties == sorted(ties)


def test_describe() -> None:
    assert FaultEvent(1, 0, "crash", (1, 2)).describe() == "n1,n2"
    assert FaultEvent(1, 0, "partition", groups=((0,), (1, 2))).describe() == "n0 | n1,n2"
    assert FaultEvent(1, 0, "loss", value=0.25).describe() == "all nodes rate 0.25"
    assert FaultEvent(1, 0, "delay", (3,), value=0.05).describe() == "n3 +50 ms"
    assert FaultEvent(1, 0, "heal").describe() == ""


# ---------------------------------------------------------------------- Disturbances


def test_crash_and_restart_window() -> None:
    d = Disturbances(4, [FaultEvent(10, 0, "crash", (1,)), FaultEvent(15, 1, "restart", (1,))],
                     end=60)  # fmt: skip
    assert d.down(1, 11, 12) and d.down(1, 5, 10) and d.down(1, 15, 20)  # closed ends
    assert not d.down(1, 0, 9.9) and not d.down(1, 15.1, 60)
    assert d.down_at(1, 10) and d.down_at(1, 14.99) and not d.down_at(1, 15)
    assert not any(d.down(i, 0, 60) for i in (0, 2, 3))
    assert not d.separated(0, 1, 0, 60)  # a crash is not a partition


def test_pause_and_resume_window() -> None:
    d = Disturbances(3, [FaultEvent(20, 0, "pause", (0, 2)), FaultEvent(30, 1, "resume", (0, 2))],
                     end=60)  # fmt: skip
    for i in (0, 2):
        assert d.down(i, 25, 26) and not d.down(i, 31, 60) and not d.down_at(i, 19.9)
    assert not d.down(1, 0, 60)


def test_resume_of_a_node_not_down_changes_nothing() -> None:
    d = Disturbances(2, [FaultEvent(5, 0, "resume", (0,)), FaultEvent(6, 1, "restart", (1,))],
                     end=10)  # fmt: skip
    assert not d.down(0, 0, 10) and not d.down(1, 0, 10)


def test_second_crash_while_down_keeps_the_first_start() -> None:
    d = Disturbances(2, [FaultEvent(5, 0, "crash", (0,)), FaultEvent(8, 1, "crash", (0,)),
                         FaultEvent(12, 2, "restart", (0,))], end=20)  # fmt: skip
    assert d.down_at(0, 6) and d.down_at(0, 11) and not d.down_at(0, 12)


def test_partition_and_heal() -> None:
    d = Disturbances(6, [FaultEvent(10, 0, "partition", groups=((0, 1), (2, 3))),
                         FaultEvent(20, 1, "heal")], end=60)  # fmt: skip
    assert d.separated(0, 2, 12, 13) and d.separated(3, 1, 19, 25)
    assert not d.separated(0, 1, 12, 13) and not d.separated(2, 3, 0, 60)
    assert not d.separated(0, 2, 21, 60) and not d.separated(0, 2, 0, 9)
    # nodes in no group form one more group together
    assert d.separated(4, 0, 15, 15) and not d.separated(4, 5, 15, 15)
    assert not d.down(0, 0, 60)  # a partition is not being down


def test_repartition_without_heal_ends_the_first_cut() -> None:
    d = Disturbances(3, [FaultEvent(10, 0, "partition", groups=((0,), (1, 2))),
                         FaultEvent(20, 1, "partition", groups=((0, 1), (2,)))], end=30)
    assert d.separated(0, 1, 15, 15) and not d.separated(0, 1, 21, 30)
    assert d.separated(1, 2, 25, 25) and not d.separated(1, 2, 11, 19)


def test_still_down_or_cut_at_the_end() -> None:
    """Never undone: down (cut) through the end, including the sample taken at t = end."""
    d = Disturbances(3, [FaultEvent(30, 0, "crash", (2,)),
                         FaultEvent(35, 1, "partition", groups=((0,), (1,)))], end=40)
    assert d.down(2, 35, 39) and d.down_at(2, 39.9) and d.down_at(2, 40.0)
    assert not d.down(2, 0, 29.9) and not d.down_at(2, 29.9)
    assert d.separated(0, 1, 39, 40) and d.separated(0, 1, 40, 40)
    assert not d.separated(0, 1, 0, 34.9)


def test_justified() -> None:
    d = Disturbances(4, [FaultEvent(10, 0, "crash", (1,)), FaultEvent(15, 1, "restart", (1,)),
                         FaultEvent(30, 2, "partition", groups=((0,), (2, 3))),
                         FaultEvent(40, 3, "heal")], end=60)  # fmt: skip
    assert d.justified(0, 1, 18, 5)  # crashed within the window before
    assert not d.justified(0, 1, 25, 5)  # back up for longer than the window
    assert d.justified(0, 2, 35, 5) and d.justified(2, 0, 44, 5)  # cut off
    assert not d.justified(2, 3, 35, 5)  # same side of the cut
    assert not d.justified(0, 3, 50, 5) and not d.justified(0, 2, 20, 5)
