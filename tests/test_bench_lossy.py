"""The agora-vs-memberlist harness's reading of what the nodes saw, and its figures, on hand-made
lines and events (the harness itself needs root, namespaces and mlnode; these do not)."""

from __future__ import annotations

import math

import pytest

from scenarios.bench import lossy
from scenarios.observation import MemberEvent


def test_mlnode_lines_become_member_events() -> None:
    lines = [
        "CONF 100.000001 profile=agora probe_interval=400ms",
        "READY 100.5 n1 198.18.0.2:7947",
        "EV 101.25 join n1 198.18.0.2:7947",  # itself: dropped
        "EV 101.5 join n0 198.18.0.1:7947",
        "ML 110.75 [INFO] memberlist: Suspect n0 has failed, no acks received",
        "ML 111.0 [INFO] memberlist: Marking n0 as failed, suspect timeout reached (0 peer "
        "confirmations)",
        "EV 111.0 leave n0 198.18.0.1:7947",
        "EV 112.0 update n0 198.18.0.1:7947",
        "EV 113.0 join n0 198.18.0.1:79",  # torn at the end of a killed node: still whole enough
        "EV 114.",  # torn before the name: skipped
    ]
    assert lossy.parse_mlnode("n1", lines) == [
        MemberEvent(101.5, "n1", "n0", "alive"), MemberEvent(110.75, "n1", "n0", "suspect"),
        MemberEvent(111.0, "n1", "n0", "failed"), MemberEvent(113.0, "n1", "n0", "alive")]


def test_agora_event_log_becomes_member_events() -> None:
    events = [{"t": 5.0, "node": "n2", "ev": "start"},
              {"t": 6.0, "node": "n2", "ev": "member", "peer": "n3", "status": "suspect"},
              {"t": 6.5, "node": "n2", "ev": "load", "load": 0.1}]  # fmt: skip
    assert lossy.parse_agora("n2", events) == [MemberEvent(6.0, "n2", "n3", "suspect")]


MARKS = {"loss20": (100.0, 130.0), "rest": (130.0, 145.0), "loss40": (145.0, 175.0),
         "after": (175.0, 195.0), "partition": (195.0, 225.0), "heal": (225.0, 255.0),
         "crash": (255.0, 275.0)}  # fmt: skip


def ev(t: float, o: int, p: int, status: str) -> MemberEvent:
    return MemberEvent(t, f"n{o}", f"n{p}", status)


def test_figures_of_a_hand_made_run() -> None:
    m = [
        ev(110, 0, 1, "suspect"), ev(111, 0, 1, "failed"), ev(112, 0, 1, "alive"),  # loss20
        ev(135, 2, 3, "failed"), ev(140, 2, 3, "alive"),  # after loss20: recovered at 140
        ev(150, 4, 5, "failed"), ev(151, 6, 5, "failed"), ev(152, 7, 8, "failed"),  # loss40
        ev(160, 4, 5, "alive"), ev(161, 6, 5, "alive"),  # n7 still sees n8 failed: never back
    ]  # fmt: skip
    # the partition: every cross pair declared dead, the first at 200, the last at 210
    for a in lossy.SIDES[0]:
        for b in lossy.SIDES[1]:
            m += [ev(200 if (a, b) == (0, 5) else 205, a, b, "failed"), ev(210, b, a, "failed")]
            m += [ev(230, a, b, "alive"), ev(232, b, a, "alive")]
    m += [ev(220, 1, 2, "failed"), ev(221, 1, 2, "alive")]  # same side, during the partition
    m += [ev(240, 3, 4, "failed"), ev(241, 3, 4, "alive")]  # same side, after the heal: a flap
    m += [ev(256 + i, i, 9, "failed") for i in range(9)]  # the crash of n9 at 255
    m += [ev(231, 7, 8, "alive")]  # n7 sees n8 again only after the heal
    m += [ev(231.5, 2, 7, "suspect")]  # a suspicion memberlist never reports as refuted
    f = lossy.figures(sorted(m, key=lambda e: e.t), MARKS)
    assert (f["loss20_false"], f["loss20_suspect"], f["loss20_after"]) == (1, 1, 1)
    assert f["loss20_recover"] == 10
    assert (f["loss40_false"], f["loss40_nodes"], f["loss40_after"]) == (3, 2, 0)
    assert f["loss40_recover"] == math.inf  # n7 -> n8 not back within the 20 s after
    assert (f["part_first"], f["part_all"], f["part_same"]) == (5, 15, 1)
    assert f["heal_remerge"] == 7 and f["heal_flaps"] == 1
    assert f["crash_detect"] == 9


def test_a_cross_pair_never_declared_leaves_part_all_open() -> None:
    m = [ev(200, a, b, "failed") for a in lossy.SIDES[0] for b in lossy.SIDES[1]]
    f = lossy.figures(m, MARKS)  # one direction only: the other side never declared this one
    assert f["part_first"] == 5 and f["part_all"] == math.inf


def test_render_shows_ratios_and_open_times() -> None:
    a = dict.fromkeys((r.key for r in lossy.rows(lossy.QUICK)), 4.0)
    b = dict.fromkeys(a, 2.0)
    a["heal_remerge"], b["loss20_false"] = math.inf, 0
    text = lossy.render({"agora": a, "memberlist": b}, lossy.QUICK, True, 200.0)
    assert "| heal → every node sees all 10 alive [s] | > 30 | 2.0 | – |" in text
    assert "×2.00" in text and "--quick" in text
    assert "| 20 % loss for 30 s: false failure declarations | 4 | 0 | – |" in text


def test_without_mlnode_the_section_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lossy.netns, "available", lambda: (True, ""))
    monkeypatch.setattr(lossy, "find_mlnode", lambda: None)
    text = lossy.run(quick=True)
    assert text.count("\n") == 3 and "mlnode not found" in text
    monkeypatch.setattr(lossy.netns, "available", lambda: (False, "needs root"))
    assert "Not run: needs root." in lossy.run(quick=True)


def test_it_is_a_section_of_make_bench() -> None:
    from scenarios.bench import __main__ as bench

    assert "lossy" in bench.SECTIONS and "lossy" in bench.RUNNERS
