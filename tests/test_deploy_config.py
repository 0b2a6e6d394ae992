"""Agent configuration: TOML parsing, validation errors naming file and key, CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.placement_config import PlacementConfig
from agent.resources import CapacityOverrides, detect_capacity, parse_size
from deploy.config import (
    ConfigError,
    apply_overrides,
    default_advertise,
    load_config,
    normalize_endpoint,
)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_full_config_is_read(tmp_path: Path) -> None:
    p = _write(tmp_path, """
node_id = "n1"
bind = "tcp://0.0.0.0:7000"
join = ["10.0.0.1:7946", "tcp://10.0.0.2:7946,tcp://10.0.0.3:7946"]
join_timeout = 3
log_level = "debug"

[resources]
cpus = 2.5
memory = "4GiB"
gpus = 1
labels = { zone = "a" }

[swim]
probe_interval = 0.25
""")
    cfg = load_config(p)
    assert cfg.node_id == "n1"
    assert cfg.join == ["tcp://10.0.0.1:7946", "tcp://10.0.0.2:7946", "tcp://10.0.0.3:7946"]
    assert cfg.join_timeout == 3.0
    assert cfg.log_level == "DEBUG"
    assert cfg.resources == CapacityOverrides(cpus=2.5, memory=4 * 1024**3, gpus=1,
                                              labels={"zone": "a"})  # fmt: skip
    assert cfg.swim.probe_interval == 0.25
    opts = cfg.to_options()
    assert opts.advertise == "tcp://127.0.0.1:7000"  # wildcard bind -> loopback by default
    assert opts.capacity.memory == 4 * 1024**3 and opts.capacity.cpus == 2.5


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert cfg.bind == "tcp://0.0.0.0:7946"
    assert cfg.resolved_node_id.endswith("-7946")
    assert cfg.join == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1", "bogus: unknown key"),
        ("join_timeout = \"soon\"", "join_timeout: expected a positive number"),
        ("join_timeout = -1", "join_timeout: expected a positive number"),
        ("bind = \"udp://x:1\"", "bind: address"),
        ("join = 5", "join: expected a list"),
        ("log_level = \"loud\"", "log_level: expected one of"),
        ("[resources]\nmemory = \"4 parsecs\"", "resources.memory: not a size"),
        ("[resources]\ncpus = true", "resources.cpus: expected a positive number"),
        ("[resources]\ngpus = -1", "resources.gpus"),
        ("[resources]\nlabels = { a = 1 }", "resources.labels.a: expected a string"),
        ("[resources]\ndisks = 2", "resources.disks: unknown key"),
        ("[swim]\nprobe_intervall = 1.0", "unknown swim option(s): probe_intervall"),
        ("[swim]\nprobe_interval = \"fast\"", "swim.probe_interval"),
        ("swim = 3", "swim: expected a table"),
        ("[placement]\npolicy = \"fastest\"", "placement.policy must be one of predictive"),
        ("[placement]\nbids = 0", "placement.bids must be a positive int"),
        ("[placement]\nlease = \"long\"", "placement.lease"),
        ("[placement]\nreplica = 3", "unknown placement option(s): replica"),
        ("[placement]\nforecast_horizons = [6, 1]", "placement.forecast_horizons must be 1 to"),
        ("[placement]\nforecast_horizons = []", "placement.forecast_horizons must be 1 to"),
        ("[placement]\nforecast_horizons = [1, 2.5]", "placement.forecast_horizons"),
        ("[placement]\nforecast_horizons = 6", "placement.forecast_horizons"),
        ("[placement]\nforecast_quantile = 1.0", "placement.forecast_quantile must be a number "
         "strictly between 0 and 1, got 1.0"),
        ("[placement]\nforecast_quantile = \"p90\"", "placement.forecast_quantile"),
        ("[placement]\nforecast_history = 0", "placement.forecast_history must be a positive"),
        ("[placement]\ndirect_awards = 1", "placement.direct_awards must be true or false"),
        ("[placement]\ndirect_award_room = 1.5", "placement.direct_award_room is a fraction"),
        ("[placement]\ndirect_award_room = 0", "placement.direct_award_room must be a positive"),
        ("forecaster = \"oracle\"",
         "forecaster: expected one of meta, meta-init, last-value, none"),
        ("node_id = ", "TOML syntax error"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    assert needle in msg, msg
    assert "\n" not in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_config(bad)


def test_command_line_overrides_file(tmp_path: Path) -> None:
    p = _write(tmp_path, 'node_id = "file"\njoin = ["tcp://h:1"]\n[resources]\ncpus = 8\n')
    cfg = apply_overrides(load_config(p), node_id="cli", join=["a:2,b:3"], memory="1GiB",
                          cpus=None, advertise="10.1.1.1:9")  # fmt: skip
    assert cfg.node_id == "cli"
    assert cfg.join == ["tcp://a:2", "tcp://b:3"]
    assert cfg.resources.cpus == 8 and cfg.resources.memory == 1024**3
    assert cfg.resolved_advertise == "tcp://10.1.1.1:9"
    with pytest.raises(ConfigError, match="--join-timeout"):
        apply_overrides(cfg, join_timeout=0.0)


def test_placement_table_and_flags(tmp_path: Path) -> None:
    p = _write(tmp_path, 'forecaster = "last-value"\n[placement]\npolicy = "sparrow"\n'
                         'bids = 3\nlease = 0.5\n')
    cfg = load_config(p)
    assert cfg.placement.policy == "sparrow" and cfg.placement.bids == 3
    assert cfg.placement.lease == 0.5 and cfg.placement.replicas == 3
    opts = apply_overrides(cfg, policy="round-robin").to_options()
    assert opts.placement.policy == "round-robin" and opts.placement.bids == 3
    assert opts.forecaster == "last-value"


def test_forecast_fields_from_toml(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, 'forecaster = "meta-init"\n[placement]\n'
                                       "forecast_horizons = [6, 24]\nforecast_quantile = 0.5\n"))
    assert cfg.forecaster == "meta-init"
    assert cfg.placement.forecast_horizons == (6, 24)  # a tuple, as the default
    assert cfg.placement.forecast_quantile == 0.5
    d = PlacementConfig()
    assert (d.forecast_horizons, d.forecast_quantile, d.forecast_history) == ((1, 6, 24, 96),
                                                                              0.9, 672)


def test_sizes_and_endpoints() -> None:
    assert parse_size(1024) == 1024
    assert parse_size("4GiB") == 4 * 1024**3
    assert parse_size("512 MiB") == 512 * 1024**2
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5k") == 1500
    for bad in ("-1", "lots", "", True, 1.5, -5):
        with pytest.raises(ValueError):
            parse_size(bad)  # type: ignore[arg-type]
    assert normalize_endpoint("h:1") == "tcp://h:1"
    assert default_advertise("tcp://*:5") == "tcp://127.0.0.1:5"
    assert default_advertise("tcp://10.0.0.1:5") == "tcp://10.0.0.1:5"
    for bad in ("tcp://h", "tcp://h:0", "tcp://h:99999", "ipc://x"):
        with pytest.raises(ValueError):
            normalize_endpoint(bad)


def test_detected_capacity_is_real_and_overridable() -> None:
    cap = detect_capacity()
    assert cap.cpus >= 1 and cap.memory > 0 and cap.gpus >= 0
    cap = detect_capacity(CapacityOverrides(cpus=3, memory=10, gpus=2, labels={"x": "y"}))
    assert (cap.cpus, cap.memory, cap.gpus, cap.labels) == (3.0, 10, 2, {"x": "y"})
