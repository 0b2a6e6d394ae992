"""Scenario files: every shipped one validates, and each kind of mistake is one `ScenarioError`
line naming the file, the line and the key path (so a user can fix it without guessing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy import cli
from scenarios import spec
from scenarios.cli import SHIPPED
from scenarios.spec import ScenarioError

SHIPPED_FILES = sorted(SHIPPED.glob("*.toml"))

BASE = """\
[scenario]
duration = 60
seeds = [1, 2]

[cluster]
nodes = 5

[workload]
rate = 1.0
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle` (found independently of the parser)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in the test text"
    return hits[nth - 1]


def error_of(tmp_path: Path, text: str, name: str = "bad.toml") -> str:
    """Load `text` from a file and return the one-line error it must raise."""
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as ei:
        spec.load(p)
    msg = str(ei.value)
    assert "\n" not in msg, "an error is one line"
    return msg


def assert_error(msg: str, path: Path | str, line: int, key: str, fragment: str) -> None:
    assert msg.startswith(f"{path}:{line}: {key}: "), msg
    assert fragment in msg, msg


# ---------------------------------------------------------------------- shipped files


def test_there_are_shipped_scenarios() -> None:
    names = {p.stem for p in SHIPPED_FILES}
    assert {"smoke", "churn", "partition", "steady"} <= names


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path: Path) -> None:
    sc = spec.load(path)
    assert sc.name == path.stem  # the name the list and results folders use
    assert sc.cluster.nodes >= 1 and sc.duration > 0 and sc.seeds and sc.policies


def test_soak_scenario_has_what_the_soak_needs() -> None:
    """Issue 9's soak: 30 min in local mode of steady work, crashes with sub-second restarts,
    10 % loss and a partition that heals, all within the arrival period."""
    sc = spec.load(SHIPPED / "soak.toml")
    assert sc.mode == "local" and sc.duration == 1800 and sc.workload.utilization
    by = {a: [f for f in sc.faults if f.action == a] for a in ("crash", "loss", "partition")}
    assert len(by["crash"]) >= 10
    assert all(f.restart == 1.0 and f.restart_after[1] < 1.0 for f in by["crash"])
    assert [f.rate for f in by["loss"]] == [0.1] and by["loss"][0].duration >= 1500
    assert by["partition"] and all(0 < f.duration and f.at + f.duration < sc.duration
                                   for f in by["partition"])  # fmt: skip
    # every crashed node restarts before the next crash: never more than one node down
    crashes = sorted(f.at for f in by["crash"])
    assert min(b - a for a, b in zip(crashes, crashes[1:], strict=False)) > 60


def test_validate_all_shipped_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["scenario", "validate", *map(str, SHIPPED_FILES)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == ""
    assert len([ln for ln in out.splitlines() if ln.startswith("ok: ")]) == len(SHIPPED_FILES)


def test_base_text_is_valid(tmp_path: Path) -> None:
    """The errors below come from the one change each test makes, not from BASE itself."""
    p = tmp_path / "ok.toml"
    p.write_text(BASE)
    sc = spec.load(p)
    assert (sc.cluster.nodes, sc.duration, sc.seeds, sc.workload.rate) == (5, 60.0, (1, 2), 1.0)
    assert sc.name == "ok"


# ---------------------------------------------------------------------- validator errors


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = BASE + "\n[bogus]\nx = 1\n"
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "[bogus]"), "bogus", "unknown key")


def test_unknown_key_in_workload(tmp_path: Path) -> None:
    text = BASE + "colour = 1\n"
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "colour"), "workload.colour",
                 "unknown key (known: arrival, rate")  # fmt: skip


def test_string_for_a_number(tmp_path: Path) -> None:
    text = BASE.replace("duration = 60", 'duration = "60"')
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", 2, "scenario.duration",
                 "expected a number, got a string")  # fmt: skip


@pytest.mark.parametrize("value", ["1e400", "inf", "nan", "-inf"])
def test_non_finite_number_rejected(tmp_path: Path, value: str) -> None:
    """TOML has inf and nan literals, and 1e400 parses to inf: none is a duration."""
    text = BASE.replace("rate = 1.0", f"rate = {value}")
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "rate ="), "workload.rate",
                 "must be finite")  # fmt: skip


def test_negative_duration(tmp_path: Path) -> None:
    text = BASE.replace("duration = 60", "duration = -5")
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", 2, "scenario.duration", "-5 is outside (0,")


def test_zero_duration(tmp_path: Path) -> None:
    text = BASE.replace("duration = 60", "duration = 0")
    assert_error(error_of(tmp_path, text), tmp_path / "bad.toml", 2, "scenario.duration",
                 "0 is outside (0,")  # fmt: skip


def test_fault_on_a_node_that_does_not_exist(tmp_path: Path) -> None:
    text = BASE + '\n[[faults]]\nat = 10\naction = "crash"\nnodes = ["n1", "n99"]\n'
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "n99"), "faults[0].nodes[1]",
                 "no node 'n99' (nodes are n0..n4)")  # fmt: skip


def test_fault_node_just_past_the_end(tmp_path: Path) -> None:
    """n5 of 5 nodes is off by one: nodes are n0..n4."""
    text = BASE + '\n[[faults]]\nat = 10\naction = "pause"\nnodes = ["n5"]\n'
    assert_error(error_of(tmp_path, text), tmp_path / "bad.toml", line_of(text, '"n5"'),
                 "faults[0].nodes[0]", "no node 'n5'")  # fmt: skip


def test_fault_time_after_the_end(tmp_path: Path) -> None:
    """The second [[faults]] entry is the one named, on its own line."""
    text = (BASE + '\n[[faults]]\nat = 10\naction = "crash"\nnodes = ["n1"]\n'
            '\n[[faults]]\nat = 90\naction = "crash"\nnodes = ["n2"]\n')  # fmt: skip
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "at = 90"), "faults[1].at",
                 "90 is after the end of the run (duration 60)")  # fmt: skip


def test_partition_node_in_two_groups(tmp_path: Path) -> None:
    text = BASE + ('\n[[faults]]\nat = 10\naction = "partition"\n'
                   'groups = [["n0", "n1"], ["n1", "n2"]]\n')  # fmt: skip
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "groups ="), "faults[0].groups",
                 "a node is in two groups")  # fmt: skip


def test_restart_on_a_non_crash_fault(tmp_path: Path) -> None:
    text = BASE + '\n[[faults]]\nat = 10\naction = "pause"\nnodes = ["n1"]\nrestart = 0.5\n'
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "restart ="), "faults[0].restart",
                 "only for crash faults, not pause")  # fmt: skip


def test_both_rate_and_utilization(tmp_path: Path) -> None:
    text = BASE + "utilization = 0.5\n"
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "utilization"),
                 "workload.utilization", "give only one of rate, utilization, csv (rate is set")


def test_bad_swim_value_routes_the_config_error(tmp_path: Path) -> None:
    """The agent's own SwimConfig validation speaks, at the line of the offending key."""
    text = BASE + "\n[cluster.swim]\nprobe_timeout = 0.1\nprobe_interval = -1\n"
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "probe_interval"),
                 "cluster.swim.probe_interval",
                 "swim.probe_interval must be a positive float, got -1")  # fmt: skip


def test_unknown_swim_key(tmp_path: Path) -> None:
    text = BASE + "\n[cluster.swim]\nprobe_intervall = 0.2\n"
    assert_error(error_of(tmp_path, text), tmp_path / "bad.toml", line_of(text, "intervall"),
                 "cluster.swim.probe_intervall", "unknown key")  # fmt: skip


def test_unknown_policy(tmp_path: Path) -> None:
    text = BASE.replace("seeds = [1, 2]", 'seeds = [1, 2]\npolicies = ["predictive", "magic"]')
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "policies"), "scenario.policies[1]",
                 "unknown policy 'magic' (known: predictive,")  # fmt: skip


def test_policy_table_keeps_both_forecast_ablations() -> None:
    from agent.forecast_tracker import KINDS
    from agent.policies import NAMES
    from scenarios.policies import POLICIES, label

    assert POLICIES["predictive"] == ("predictive", "meta")
    assert POLICIES["predictive-unadapted"] == ("predictive", "meta-init")
    assert POLICIES["predictive-lastvalue"] == ("predictive", "last-value")
    assert all(p in NAMES and k in KINDS for p, k in POLICIES.values())
    assert "ablation" in label("predictive-unadapted") and "ablation" in label(
        "predictive-lastvalue")


def test_scenario_forecast_fields_are_checked(tmp_path: Path) -> None:
    text = BASE + "\n[cluster.placement]\nforecast_quantile = 1.5\n"
    msg = error_of(tmp_path, text)
    assert "placement.forecast_quantile must be a number strictly between 0 and 1" in msg


def test_duplicate_seed(tmp_path: Path) -> None:
    text = BASE.replace("seeds = [1, 2]", "seeds = [1, 2, 1]")
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", 3, "scenario.seeds", "lists a seed twice")


def test_bad_toml_syntax_line_from_the_parser(tmp_path: Path) -> None:
    text = BASE + "\n\noops = = 3\n"
    msg = error_of(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'bad.toml'}:{line_of(text, 'oops')}: not valid TOML: ")


def test_class_share_zero(tmp_path: Path) -> None:
    text = BASE.replace("nodes = 5", "nodes = 5\n\n[[cluster.class]]\ncpus = 4\n\n"
                        "[[cluster.class]]\ncpus = 8\nshare = 0\n")  # fmt: skip
    msg = error_of(tmp_path, text)
    assert_error(msg, tmp_path / "bad.toml", line_of(text, "share = 0"),
                 "cluster.class[1].share", "0 is outside (0,")  # fmt: skip


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as ei:
        spec.load(p)
    assert str(ei.value) == f"{p}: no such file"


def test_missing_required_fault_target_names_the_table_line(tmp_path: Path) -> None:
    """An error about the whole [[faults]] entry points at its header."""
    text = BASE + '\n[[faults]]\nat = 10\naction = "crash"\n'
    msg = error_of(tmp_path, text)
    assert msg == (f"{tmp_path / 'bad.toml'}:{line_of(text, '[[faults]]')}: faults[0]: crash "
                   "needs nodes = [...] or fraction = ...")  # fmt: skip


# ---------------------------------------------------------------------- the CLI


def test_cli_validate_bad_file_one_line_no_traceback(tmp_path: Path) -> None:
    """Run as a real process: exit 1, exactly one 'agora: error:' line, no traceback."""
    p = tmp_path / "bad.toml"
    p.write_text(BASE.replace("duration = 60", 'duration = "long"'))
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", "scenario", "validate", str(p)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"agora: error: {p}:2: scenario.duration: expected a number, got a string"]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_validate_mixed_files_reports_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(BASE)
    bad.write_text(BASE + "colour = 1\n")
    rc = cli.main(["scenario", "validate", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.startswith(f"ok: {good}: good, 5 nodes, 60 s, 0 faults")
    assert err.splitlines() == [f"agora: error: {bad}:10: workload.colour: unknown key (known: "
                                "arrival, rate, utilization, start, stop, cpus, memory, duration,"
                                " deadline_factor, daily_period, daily_amplitude, burst, csv)"]


def test_cli_list_lists_every_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["scenario", "list"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    rows = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip() and not ln.startswith("(")]
    assert rows == [p.stem for p in SHIPPED_FILES]
    assert "INVALID" not in out
    assert f"({len(SHIPPED_FILES)} scenarios in " in out


def test_cli_run_unknown_name_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["scenario", "run", "nosuchname"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("agora: error: nosuchname: no such file, and no shipped scenario "
                               "of that name (shipped: ")  # fmt: skip
    assert "smoke" in lines[0]
