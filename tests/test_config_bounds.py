"""Issue 9, finding 10: an agent configured with a value its peers' wire decoder refuses (cpus
1e19, a memory of 10^7 TiB, a 300-character node id, ...) used to start, and every peer then
dropped its messages in silence. Such values are refused at start, naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.config import ConfigError, apply_overrides, load_config
from gossip.fields import MAX_ID_LEN, MAX_INT, MAX_LABELS

LONG = "x" * (MAX_ID_LEN + 1)
TOO_MANY_LABELS = "{ " + ", ".join(f"k{i} = \"v\"" for i in range(MAX_LABELS + 1)) + " }"


@pytest.mark.parametrize(("text", "needle"), [
    ("[resources]\ncpus = 1e19", "resources.cpus: expected at most 1e+18"),
    ("[resources]\nmemory = \"10000000TiB\"", f"resources.memory: at most {MAX_INT} bytes"),
    (f"[resources]\nmemory = {MAX_INT}\ngpus = {MAX_INT}", ""),  # at the limits: accepted
    (f"node_id = \"{LONG}\"", f"node_id: at most {MAX_ID_LEN} characters"),
    ("node_id = \"@alice\"", "node_id: must not start with '@'"),
    (f"advertise = \"tcp://{'h' * MAX_ID_LEN}:1\"", f"advertise: at most {MAX_ID_LEN}"),
    (f"bind = \"tcp://{'h' * MAX_ID_LEN}:1\"", f"bind: at most {MAX_ID_LEN}"),
    (f"join = [\"tcp://{'h' * MAX_ID_LEN}:1\"]", f"join: at most {MAX_ID_LEN}"),
    (f"[resources]\nlabels = {{ {'k' * (MAX_ID_LEN + 1)} = \"v\" }}",
     f"resources.labels: key 'kkkkkkkkkk...' is longer than {MAX_ID_LEN}"),
    (f"[resources]\nlabels = {{ k = \"{LONG}\" }}",
     f"resources.labels.k: at most {MAX_ID_LEN} characters"),
    ("[resources]\nlabels = { \"\" = \"v\" }", "resources.labels: empty key"),
    (f"[resources]\nlabels = {TOO_MANY_LABELS}", f"resources.labels: at most {MAX_LABELS}"),
    ("join_timeout = 1e300", "join_timeout: expected at most 86400"),
    ("load_interval = 1e300", "load_interval: expected at most 86400"),
])  # fmt: skip
def test_values_peers_would_drop_are_refused_naming_file_and_key(
        tmp_path: Path, text: str, needle: str) -> None:  # fmt: skip
    p = tmp_path / "node.toml"
    p.write_text(text + "\n")
    if not needle:
        load_config(p).to_options()
        return
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize(("flags", "needle"), [
    ({"cpus": 1e19}, "expected at most 1e+18"),
    ({"memory": "10000000TiB"}, f"at most {MAX_INT} bytes"),
    ({"gpus": MAX_INT + 1}, f"at most {MAX_INT}"),
    ({"node_id": LONG}, f"--node-id: at most {MAX_ID_LEN} characters"),
    ({"node_id": "@ops"}, "--node-id: must not start with '@'"),
    ({"labels": {"k": LONG}}, f"at most {MAX_ID_LEN} characters"),
    ({"join_timeout": 1e300}, "--join-timeout: expected at most 86400"),
])  # fmt: skip
def test_command_line_values_peers_would_drop_are_refused(flags: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        apply_overrides(load_config(None), **flags)
    assert str(e.value).startswith("command line: ") and needle in str(e.value), e.value
