"""Agent configuration: a TOML file, then command-line flags on top.

Example (every key is optional)::

    node_id = "rack1-node7"              # default: <hostname>-<port>
    bind = "tcp://0.0.0.0:7946"          # the one endpoint this agent listens on
    advertise = "tcp://10.0.0.7:7946"    # how peers reach it (see below)
    join = ["tcp://10.0.0.1:7946"]       # seeds; empty = start a new cluster
    join_timeout = 10.0                  # seconds to reach a seed before giving up
    load_interval = 1.0                  # seconds between load samples
    forecaster = "meta"                  # meta | meta-init, last-value (ablations) | none
    log_level = "INFO"
    event_log = "events.jsonl"           # JSON-lines event log for checkers; "" = none
    fault_rules = "faults.json"          # fault injection rules, polled (testing only); "" = none
    cluster_key = "cluster.key"          # keyring (agora keys generate): CURVE; "" = plain

    [resources]                          # override what is detected with psutil
    cpus = 4
    memory = "8GiB"                      # bytes as an int, or a string: 512MiB, 8GiB, 2GB
    gpus = 0
    labels = { zone = "a", disk = "ssd" }

    [swim]                               # gossip.config.SwimConfig fields
    probe_interval = 0.5

    [placement]                          # agent.placement_config.PlacementConfig fields
    policy = "predictive"                # or least-loaded, sparrow, random, round-robin
    bids = 2

    [replay]                             # background load from a recorded trace, not psutil
    trace = "vm_1218322450_2"            # one CPU % per line (first column); required
    step = 300.0                         # seconds per sample
    offset = 0.0                         # seconds into the trace at epoch
    epoch = 0.0                          # unix time of the replay's t=0; 0 = agent start

Relative paths in a file (``event_log``, ``fault_rules``, ``cluster_key``, ``replay.trace``) are
relative to that file's directory; on the command line, to the current directory.

``advertise`` defaults to ``bind`` with a wildcard host (``0.0.0.0`` or ``*``) replaced by
``127.0.0.1``. That is right for a cluster on one machine only: on several machines, set
``advertise`` to an address the other machines can reach.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.agent import AgentOptions
from agent.forecast_tracker import KINDS
from agent.placement_config import PlacementConfig
from agent.resources import CapacityOverrides, ReplayTrace, detect_capacity, parse_size
from gossip.config import SwimConfig
from gossip.fields import MAX_ID_LEN, MAX_INT, MAX_LABELS
from gossip.messages import MAX_NODE_CPUS

DEFAULT_BIND = "tcp://0.0.0.0:7946"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORECASTERS = KINDS  # meta, meta-init, last-value, none
MAX_INTERVAL = 86_400.0  # join_timeout, load_interval: a day; longer is a typo
CLIENT_PREFIX = "@"  # node ids starting with it are reserved for client principals
_ENDPOINT_RE = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.*-]+):([0-9]{1,5})$")


class ConfigError(Exception):
    """A configuration problem, described in one line naming the file and the key."""


def normalize_endpoint(addr: str, what: str = "address") -> str:
    """``tcp://host:port`` from ``tcp://host:port`` or ``host:port``; ValueError otherwise."""
    addr = addr.strip()
    if "://" not in addr:
        addr = "tcp://" + addr
    m = _ENDPOINT_RE.match(addr)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"{what} {addr!r} is not tcp://HOST:PORT")
    return addr


def endpoint_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def default_advertise(bind: str) -> str:
    host_port = bind.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    if host in ("0.0.0.0", "*", "[::]"):
        host = "127.0.0.1"
    return f"tcp://{host}:{port}"


@dataclass(slots=True)
class AgentConfig:
    node_id: str | None = None
    bind: str = DEFAULT_BIND
    advertise: str | None = None
    join: list[str] = field(default_factory=list)
    join_timeout: float = 10.0
    load_interval: float = 1.0
    forecaster: str = "meta"
    log_level: str = "INFO"
    resources: CapacityOverrides = field(default_factory=CapacityOverrides)
    swim: SwimConfig = field(default_factory=SwimConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    event_log: str = ""
    fault_rules: str = ""
    cluster_key: str = ""
    replay: ReplayTrace | None = None
    source: str = "<defaults>"  # the file it came from, for messages

    @property
    def resolved_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{endpoint_port(self.bind)}"

    @property
    def resolved_advertise(self) -> str:
        return self.advertise or default_advertise(self.bind)

    def to_options(self) -> AgentOptions:
        return AgentOptions(
            node_id=self.resolved_node_id,
            bind=self.bind,
            advertise=self.resolved_advertise,
            capacity=detect_capacity(self.resources),
            seeds=list(self.join),
            swim=self.swim,
            join_timeout=self.join_timeout,
            load_interval=self.load_interval,
            placement=self.placement,
            forecaster=self.forecaster,
            event_log=self.event_log,
            fault_rules=self.fault_rules,
            cluster_key=self.cluster_key,
            replay=self.replay,
        )


# ---------------------------------------------------------------- validation helpers


def _err(src: str, key: str, msg: str) -> ConfigError:
    shown = key if key.isprintable() else json.dumps(key)  # one line, whatever the key holds
    return ConfigError(f"{src}: {shown}: {msg}")


def _pos_number(src: str, key: str, v: Any, most: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise _err(src, key, f"expected a positive number, got {v!r}")
    if v > most:
        raise _err(src, key, f"expected at most {most:g}, got {v!r}")
    return float(v)


def _interval(src: str, key: str, v: Any) -> float:
    return _pos_number(src, key, v, MAX_INTERVAL)


def _string(src: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _err(src, key, f"expected a non-empty string, got {v!r}")
    if len(v) > MAX_ID_LEN:  # peers' wire decoder drops longer ids and addresses
        raise _err(src, key, f"at most {MAX_ID_LEN} characters, got {len(v)}")
    return v


def _node_id(src: str, key: str, v: Any) -> str:
    v = _string(src, key, v)
    if v.startswith(CLIENT_PREFIX):
        raise _err(src, key, f"must not start with {CLIENT_PREFIX!r} (reserved for clients), "
                   f"got {v[:40]!r}")  # fmt: skip
    return v


def _endpoint(src: str, key: str, v: Any) -> str:
    try:
        addr = normalize_endpoint(_string(src, key, v), "address")
    except ValueError as e:
        raise _err(src, key, str(e)) from None
    return _string(src, key, addr)  # "host:port" grows by "tcp://"


def _join_list(src: str, key: str, v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise _err(src, key, f"expected a list of addresses, got {v!r}")
    out: list[str] = []
    for item in v:
        item = _string(src, key, item)
        out += [_endpoint(src, key, part) for part in item.split(",") if part.strip()]
    return out


def _log_level(src: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or v.upper() not in LOG_LEVELS:
        raise _err(src, key, f"expected one of {', '.join(LOG_LEVELS)}, got {v!r}")
    return v.upper()


def _forecaster(src: str, key: str, v: Any) -> str:
    if v not in FORECASTERS:
        raise _err(src, key, f"expected one of {', '.join(FORECASTERS)}, got {v!r}")
    return v


def _labels(src: str, key: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _err(src, key, f"expected a table of strings, got {v!r}")
    if len(v) > MAX_LABELS:
        raise _err(src, key, f"at most {MAX_LABELS} labels, got {len(v)}")
    for k, x in v.items():
        if not k:
            raise _err(src, key, "empty key")
        if len(k) > MAX_ID_LEN:
            raise _err(src, key, f"key {k[:10] + '...'!r} is longer than {MAX_ID_LEN}")
        if not isinstance(x, str):
            raise _err(src, f"{key}.{k}", f"expected a string, got {x!r}")
        if len(x) > MAX_ID_LEN:
            raise _err(src, f"{key}.{k}", f"at most {MAX_ID_LEN} characters, got {len(x)}")
    return dict(v)


def _path(src: str, key: str, v: Any, base: Path | None) -> str:
    """A file path ("" = off), made absolute: relative to `base` (a config file's directory)."""
    if not isinstance(v, str):
        raise _err(src, key, f"expected a file path (a string), got {v!r}")
    if not v:
        return ""
    if "\0" in v:
        raise _err(src, key, "a path must not contain NUL")
    p = Path(v).expanduser()
    return str(p if p.is_absolute() else (base or Path.cwd()) / p)


def _number(src: str, key: str, v: Any, low: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < low:
        raise _err(src, key, f"expected a number >= {low:g}, got {v!r}")
    return float(v)


_REPLAY_KEYS = ("trace", "step", "offset", "epoch")


def parse_replay(src: str, table: Any, base: Path | None) -> ReplayTrace:
    """The ``[replay]`` table, with its trace file read and checked now (not at the first
    sample): a bad trace is a config error naming the file and line."""
    from metalearn.data import load_file
    from metalearn.errors import DataError

    if not isinstance(table, dict):
        raise _err(src, "replay", "expected a table")
    unknown = sorted(set(table) - set(_REPLAY_KEYS))
    if unknown:
        raise _err(src, f"replay.{unknown[0]}", f"unknown key (known: {', '.join(_REPLAY_KEYS)})")
    if "trace" not in table:
        raise _err(src, "replay.trace", "required: the trace file to replay")
    path = _path(src, "replay.trace", table["trace"], base)
    if not path:
        raise _err(src, "replay.trace", "expected a file path, got ''")
    step = _pos_number(src, "replay.step", table.get("step", 300.0))
    offset = _number(src, "replay.offset", table.get("offset", 0.0), 0.0)
    epoch = _number(src, "replay.epoch", table.get("epoch", 0.0), 0.0)
    try:
        series = load_file(path)
    except DataError as e:
        raise _err(src, "replay.trace", str(e)) from None
    return ReplayTrace(tuple(series.values.tolist()), step, offset, epoch, path)


def parse_resources(src: str, table: Any, base: CapacityOverrides) -> CapacityOverrides:
    if not isinstance(table, dict):
        raise _err(src, "resources", "expected a table")
    known = {"cpus", "memory", "gpus", "labels"}
    unknown = sorted(set(table) - known)
    if unknown:
        known_list = ", ".join(sorted(known))
        raise _err(src, f"resources.{unknown[0]}", f"unknown key (known: {known_list})")
    out = base
    if "cpus" in table:
        out = replace(out, cpus=_pos_number(src, "resources.cpus", table["cpus"], MAX_NODE_CPUS))
    if "memory" in table:
        try:
            memory = parse_size(table["memory"])
        except ValueError as e:
            raise _err(src, "resources.memory", str(e)) from None
        if memory > MAX_INT:
            raise _err(src, "resources.memory", f"at most {MAX_INT} bytes, got {table['memory']!r}")
        out = replace(out, memory=memory)
    if "gpus" in table:
        g = table["gpus"]
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_INT:
            raise _err(src, "resources.gpus",
                       f"expected a whole number >= 0 and at most {MAX_INT}, got {g!r}")
        out = replace(out, gpus=g)
    if "labels" in table:
        out = replace(out, labels=_labels(src, "resources.labels", table["labels"]))
    return out


_TOP = {
    "node_id": ("node_id", _node_id),
    "bind": ("bind", _endpoint),
    "advertise": ("advertise", _endpoint),
    "join": ("join", _join_list),
    "join_timeout": ("join_timeout", _interval),
    "load_interval": ("load_interval", _interval),
    "forecaster": ("forecaster", _forecaster),
    "log_level": ("log_level", _log_level),
}


_TABLES = {"swim": SwimConfig, "placement": PlacementConfig}
_PATHS = ("event_log", "fault_rules", "cluster_key")


def config_from_dict(
    data: dict[str, Any], src: str = "<config>", base: Path | None = None
) -> AgentConfig:
    """`base`: the directory relative paths are taken from (default: the current one)."""
    cfg = AgentConfig(source=src)
    for key, value in data.items():
        if key == "resources":
            cfg.resources = parse_resources(src, value, cfg.resources)
        elif key == "replay":
            cfg.replay = parse_replay(src, value, base)
        elif key in _PATHS:
            setattr(cfg, key, _path(src, key, value, base))
        elif key in _TABLES:
            if not isinstance(value, dict):
                raise _err(src, key, "expected a table")
            try:
                setattr(cfg, key, _TABLES[key].from_dict(value))
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{src}: [{key}]: {e}") from None
        elif key in _TOP:
            attr, check = _TOP[key]
            setattr(cfg, attr, check(src, key, value))
        else:
            known = ", ".join([*_TOP, *_PATHS, "resources", *_TABLES, "replay"])
            raise _err(src, key, f"unknown key (known: {known})")
    return cfg


def load_config(path: str | Path | None) -> AgentConfig:
    """Read a TOML file (None ⇒ defaults). Raises ConfigError on any problem."""
    if path is None:
        return AgentConfig()
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{src}: is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"{src}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{src}: TOML syntax error: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{src}: not a UTF-8 text file") from None
    return config_from_dict(data, src, Path(path).resolve().parent)


def apply_overrides(cfg: AgentConfig, **flags: Any) -> AgentConfig:
    """Command-line values (None = not given) replace file values; validated the same way."""
    src = "command line"
    for key, value in flags.items():
        if value is None or value == []:
            continue
        if key in ("cpus", "memory", "gpus", "labels"):
            cfg.resources = parse_resources(src, {key: value}, cfg.resources)
        elif key == "policy":
            try:
                cfg.placement = dataclasses.replace(cfg.placement, policy=value)
            except ValueError as e:
                raise ConfigError(f"{src}: --policy: {e}") from None
        elif key in _PATHS:
            setattr(cfg, key, _path(src, "--" + key.replace("_", "-"), value, None))
        elif key in _TOP:
            attr, check = _TOP[key]
            setattr(cfg, attr, check(src, "--" + key.replace("_", "-"), value))
        else:  # pragma: no cover - a programming error in the CLI
            raise ConfigError(f"{src}: unknown option {key}")
    return cfg
