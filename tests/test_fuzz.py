"""Fuzzing harness: every decoder, both file loaders and every core's message handler.

Properties, for any input a peer or a user can produce:
- `gossip.wire.decode` raises nothing but `WireError` (arbitrary bytes; well-formed msgpack
  envelopes of every kind with one field mutated, removed or added);
- the scenario validator raises nothing but a one-line `ScenarioError`, the agent config loader
  nothing but a one-line `ConfigError`;
- a node core (membership + placement, `agent.node.NodeCore`) holding real tasks, fed decoded
  peer messages of every kind with extreme values, never raises, keeps its invariants (below),
  only ever emits messages that every peer can decode, and handles each input in bounded time.

Short by default (fixed examples: CI repeats the same run, well under a minute); `make fuzz`
runs the same properties with many fresh examples (`AGORA_FUZZ_EXAMPLES`, docs/agent.md).
A crash found here becomes a regression test with its minimal example at the end of this file.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
import tomllib
from pathlib import Path

import fuzz_strategies as fz
import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.execution import StartTask, TaskExit
from agent.node import NodeCore
from agent.records import rank
from agent.tasks import MAX_EXIT_CODE, MIN_EXIT_CODE, TaskState
from deploy.config import ConfigError, config_from_dict, load_config
from gossip import wire
from gossip.effects import Outgoing
from gossip.fields import MAX_INT
from gossip.kinds import kinds
from gossip.messages import PROTOCOL_VERSION, Gossip, MemberUpdate, Message, Ping, Status
from scenarios.sim.placement_cluster import PlacementCluster, task_spec
from scenarios.spec import ScenarioError, parse

SHIPPED = sorted((Path(__file__).parent.parent / "scenarios" / "shipped").glob("*.toml"))
CPU_SECONDS_PER_INPUT = 1.0  # a message takes ~0.1 ms; a whole second is a hang or a blow-up

# ---------------------------------------------------------------- the decoder


@fz.fuzz_settings(400)
@given(st.binary(max_size=4096))
def test_decode_arbitrary_bytes_raises_only_wire_error(data):
    try:
        wire.decode(data)
    except wire.WireError:
        pass


def _raw_envelope(msg: Message) -> list:
    return msgpack.unpackb(wire.encode(msg), raw=False)


_any_msgpack = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=20,
)  # fmt: skip
_all_bodies = fz.membership_bodies | fz.placement_bodies(fz.ids, fz.task_records(fz.ids))


@fz.fuzz_settings(400)
@given(fz.envelopes(_all_bodies), st.data(), _any_msgpack,
       st.sampled_from(["replace", "remove", "append"]))  # fmt: skip
def test_decode_valid_envelopes_with_a_mutated_field_raises_only_wire_error(
    msg, data, value, how
):
    raw = _raw_envelope(msg)
    path = data.draw(st.sampled_from(fz.paths(raw)[1:]))
    if how == "replace":
        raw = fz.replaced(raw, path, value)
    elif how == "remove":
        raw = fz.replaced(raw, path, None)
    else:
        parent = fz.replaced(raw, (), raw)
        target = parent
        for k in path[:-1]:
            target = target[k]
        if isinstance(target, list):
            target.append(value)
        raw = parent
    try:
        out = wire.decode(msgpack.packb(raw, use_bin_type=True))
    except wire.WireError:
        return
    assert isinstance(out, Message)


@fz.fuzz_settings(200)
@given(st.sampled_from([k.number for k in kinds()]), st.lists(_any_msgpack, max_size=18))
def test_decode_every_kind_with_a_body_of_any_shape_raises_only_wire_error(kind, body):
    try:
        wire.decode(msgpack.packb([PROTOCOL_VERSION, int(kind), "n1", "a", 0, body]))
    except wire.WireError:
        pass


@fz.fuzz_settings(200)
@given(fz.envelopes(_all_bodies))
def test_every_generated_message_round_trips(msg):
    """The strategies below stay within the wire limits: what the cores are fed is exactly
    what `decode` hands them (this also keeps the strategies honest)."""
    assert wire.decode(wire.encode(msg)) == msg


# ---------------------------------------------------------------- the file loaders


def _one_line(e: Exception) -> None:
    text = str(e)
    assert text and "\n" not in text, repr(text)


@fz.fuzz_settings(200)
@given(st.text(max_size=400))
def test_scenario_validator_on_any_text_raises_only_scenario_error(text):
    try:
        parse(text, "fuzz.toml")
    except ScenarioError as e:
        _one_line(e)


@functools.cache
def _shipped_docs() -> list[dict]:
    return [tomllib.loads(p.read_text()) for p in SHIPPED]


@fz.fuzz_settings(300)
@given(st.data(), fz.toml_values | st.none())
def test_scenario_validator_on_mutated_shipped_scenarios_raises_only_scenario_error(data, value):
    """A shipped scenario with one value anywhere in it replaced (or, with None, removed)."""
    doc = data.draw(st.sampled_from(_shipped_docs()))
    path = data.draw(st.sampled_from(fz.paths(doc)[1:]))
    text = fz.toml_dumps(fz.replaced(doc, path, value))
    assert tomllib.loads(text) is not None  # the writer itself must produce valid TOML
    try:
        parse(text, "fuzz.toml")
    except ScenarioError as e:
        _one_line(e)


def test_toml_writer_round_trips_every_shipped_scenario():
    for doc in _shipped_docs():
        assert tomllib.loads(fz.toml_dumps(doc)) == doc


_CONFIG_KEYS = ["node_id", "bind", "advertise", "join", "join_timeout", "load_interval",
                "forecaster", "log_level", "resources", "swim", "placement", "event_log",
                "fault_rules", "replay", "unknown"]  # fmt: skip
_TABLE_KEYS = ["cpus", "memory", "gpus", "labels", "probe_interval", "probe_timeout",
               "gossip_fanout", "heartbeat", "replicas", "policy", "path", "step", "column"]


_config_key_text = fz.toml_text


@fz.fuzz_settings(300)
@given(st.dictionaries(
    st.sampled_from(_CONFIG_KEYS) | _config_key_text,
    fz.toml_values | st.dictionaries(st.sampled_from(_TABLE_KEYS) | _config_key_text,
                                     fz.toml_values, max_size=4),
    max_size=5,
))  # fmt: skip
def test_agent_config_loader_raises_only_config_error(tmp_path_factory, doc):
    base = tmp_path_factory.getbasetemp()
    try:
        config_from_dict(doc, "fuzz.toml", base)
    except ConfigError as e:
        _one_line(e)


@fz.fuzz_settings(100)
@given(st.binary(max_size=300))
def test_agent_config_file_of_any_bytes_raises_only_config_error(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz-agent.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as e:
        _one_line(e)


# ---------------------------------------------------------------- the node core

TARGET = "sim://n0"


@functools.cache
def _snapshot() -> tuple[NodeCore, float]:
    """Node n0 of a 3-node simulated cluster in the middle of real work: tasks pending,
    negotiating, placed and running, records owned and replicated, leases held."""
    c = PlacementCluster(3, seed=7)
    c.run_for(0.5)
    for i in range(8):
        c.submit(f"t{i}", task_spec(cpus=1.0 + i % 3, expected=30.0 + i), via=i % 3,
                 at=0.6 + 0.05 * i)  # fmt: skip
    c.run_for(1.5)
    return copy.deepcopy(c.core(TARGET)), c.now


def _task_ids(core: NodeCore) -> list[str]:
    return sorted(core.placement.owner.store.records) or ["t0"]


@dataclasses.dataclass
class _Watch:
    """What must never go backwards in a core, between two of its inputs."""

    incarnation: int
    own_version: int
    ranks: dict[str, tuple]

    @classmethod
    def of(cls, core: NodeCore) -> _Watch:
        m = core.membership
        return cls(m.incarnation, m.resources.version,
                   {t: rank(r) for t, r in core.placement.owner.store.records.items()})  # fmt: skip


def check_invariants(core: NodeCore, before: _Watch) -> _Watch:
    m = core.membership
    me = m.member(core.node_id)
    assert me is not None and me.status == Status.ALIVE, me
    assert m.incarnation >= before.incarnation and m.resources.version >= before.own_version
    rows = {v.node: v.status for v in m.members()}
    live = m.live_nodes()
    assert len(live) == len(set(live))
    assert set(live) == {n for n, s in rows.items()
                         if n != core.node_id and s in (Status.ALIVE, Status.SUSPECT)}  # fmt: skip
    p = core.placement
    assert not p.ledger.over_committed(), (p.ledger.used(), p.ledger.capacity)
    for tid, rec in p.owner.store.records.items():
        assert rec.id == tid
        old = before.ranks.get(tid)
        # the merge rule (agent.records.newer): a stored copy is only ever replaced by a
        # higher-ranked one, so a finished task never goes back to running
        assert old is None or rank(rec) >= old, (tid, old, rank(rec))
    return _Watch.of(core)


def check_outgoing(out: list) -> list[StartTask]:
    """Everything a core sends must decode at its peers; a message they drop as malformed is
    a message lost for good (e.g. a refutation, a report). Returns the runs it starts."""
    assert len(out) < 10_000
    for o in out:
        if not isinstance(o, Outgoing):
            continue
        try:
            back = wire.decode(wire.encode(o.msg))
        except wire.WireError as e:
            raise AssertionError(f"core sent a message peers cannot decode ({e}): {o.msg}") from e
        assert back == o.msg
    return [e for e in out if isinstance(e, StartTask)]


def _timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    spent = time.process_time() - t0
    assert spent < CPU_SECONDS_PER_INPUT, f"{fn.__name__} took {spent:.2f} s of CPU"
    return out


@st.composite
def core_inputs(draw):
    """A sequence of inputs to the snapshot core: peer messages that lean on the tasks it
    holds (their ids, attempts and rounds nearby), with clock advances and ticks between."""
    core, _ = _snapshot()
    store = core.placement.owner.store.records
    held = _task_ids(core)
    task_ids = st.sampled_from(held) | fz.ids
    mutated = st.builds(
        lambda rec, changes: dataclasses.replace(rec, **changes),
        st.sampled_from([store[t] for t in held]) if store else fz.task_records(task_ids),
        st.fixed_dictionaries({}, optional={
            "state": fz.states, "version": fz.incarnations, "attempt": fz.ints(),
            "replicas": st.lists(fz.ids, max_size=4).map(tuple), "node": fz.maybe_ids,
            "writer": fz.maybe_ids, "spec": fz.specs, "exit_code": fz.ints(MAX_EXIT_CODE,
                                                                           MIN_EXIT_CODE),
        }),
    )  # fmt: skip
    records = mutated | fz.task_records(task_ids)
    bodies = fz.membership_bodies | fz.placement_bodies(task_ids, records)
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        msg = draw(fz.envelopes(bodies))
        dt = draw(st.sampled_from([0.0, 0.0, 0.01, 0.3, 2.0, 30.0]))
        exit_state = draw(st.sampled_from([None, TaskState.SUCCEEDED, TaskState.FAILED,
                                           TaskState.CANCELLED]))  # fmt: skip
        steps.append((msg, dt, exit_state))
    return steps


@fz.fuzz_settings(150)
@given(core_inputs())
def test_node_core_survives_adversarial_peer_messages(steps):
    snap, start = _snapshot()
    core = copy.deepcopy(snap)
    _drive(core, start, steps)


def _drive(core: NodeCore, now: float, steps: list) -> None:
    seen = _Watch.of(core)
    started: list[StartTask] = []
    for msg, dt, exit_state in steps:
        try:
            msg = wire.decode(wire.encode(msg))  # exactly what a shell would hand the core
        except wire.WireError:
            assume(False)  # oversized: a shell never delivers it
        started += check_outgoing(_timed(core.on_message, now, msg))
        seen = check_invariants(core, seen)
        now += dt
        if now >= core.next_wakeup():
            started += check_outgoing(_timed(core.on_tick, now))
            seen = check_invariants(core, seen)
        if exit_state is not None and started:
            run = started.pop(0)  # a run the core started ends (or a stale one reports late)
            e = TaskExit(run.task_id, run.attempt, exit_state, 1, "fuzz", "o", "e")
            started += check_outgoing(_timed(core.on_task_exit, now, e))
            seen = check_invariants(core, seen)


def test_the_snapshot_core_is_busy():
    """The fuzzed core holds real work, or the messages above would only hit empty tables."""
    core, _ = _snapshot()
    store = core.placement.owner.store.records
    assert len(store) >= 3 and len(core.membership.live_nodes()) == 2
    assert {r.state for r in store.values()} & {TaskState.PLACED, TaskState.RUNNING}


# ---------------------------------------------------------------- regressions found by fuzzing


def test_forged_update_at_max_incarnation_is_refuted_decodably():
    """Minimal example found by `test_node_core_survives_adversarial_peer_messages`: a peer
    gossips that n0 left at incarnation 2**63-1; n0's refutation must still reach its peers."""
    snap, now = _snapshot()
    core = copy.deepcopy(snap)
    forged = MemberUpdate("n0", "sim://n0", MAX_INT, Status.LEFT)
    msg = Message("n1", "sim://n1", 1, Ping("n0", Gossip((forged,))))
    out = core.on_message(now, wire.decode(wire.encode(msg)))
    for o in out:
        if isinstance(o, Outgoing):
            wire.decode(wire.encode(o.msg))


def test_scenario_error_naming_a_key_with_a_newline_is_one_line():
    """Minimal example found by the mutated-scenario property (`make fuzz`): an unknown key
    `"\n"` was printed raw, so the one-line error spanned two lines."""
    with pytest.raises(ScenarioError) as e:
        parse('[scenario]\n"\\n" = false\n', "fuzz.toml")
    _one_line(e.value)
    assert '"\\n"' in str(e.value)


def test_config_error_naming_a_key_with_a_newline_is_one_line():
    """Minimal example found by the config-loader property: the same defect in the agent's
    config loader (an unknown top-level key `"\n"`)."""
    with pytest.raises(ConfigError) as e:
        config_from_dict({"\n": {}}, "fuzz.toml")
    _one_line(e.value)
