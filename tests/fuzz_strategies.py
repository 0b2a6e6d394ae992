"""Hypothesis strategies for the fuzzing harness (`tests/test_fuzz.py`): every protocol message
with the values a hostile or broken peer would pick, and TOML documents for the file loaders.

Values come from two sources at once: boundaries (0, 1, the wire limits, empty and maximum-length
strings, ids the target knows and ids it does not) and the whole range the wire accepts between
them. Everything built here is within the wire limits, so a message survives `gossip.wire`'s
round trip and reaches a core exactly as a decoded peer message would.
"""

from __future__ import annotations

import math
import os

from hypothesis import settings
from hypothesis import strategies as st

from agent.messages import (
    MAX_BID_LOAD,
    MAX_HEADROOM,
    MAX_LIST_RECORDS,
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Release,
    ReportAck,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskPut,
    TaskPutAck,
    TaskReport,
)
from agent.tasks import (
    MAX_ARG_LEN,
    MAX_ARGV,
    MAX_CWD_LEN,
    MAX_DURATION,
    MAX_EXIT_CODE,
    MAX_OUTPUT_TAIL,
    MAX_REASON_LEN,
    MAX_TASK_CPUS,
    MAX_TIME,
    MIN_EXIT_CODE,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from gossip.fields import MAX_ID_LEN, MAX_INT, MAX_LABELS
from gossip.membership import GEN_SHIFT, MAX_GENERATION
from gossip.messages import (
    MAX_FORECAST,
    Ack,
    Digest,
    Gossip,
    GossipOnly,
    MemberUpdate,
    Message,
    Nack,
    Ping,
    PingReq,
    ResourceRecord,
    Status,
    Sync,
    SyncPush,
    SyncReply,
    quantized,
)

# ---------------------------------------------------------------- how many examples

FUZZ_EXAMPLES = int(os.environ.get("AGORA_FUZZ_EXAMPLES", "0") or 0)
"""0 (the default, `make test`): a short, derandomized run that CI repeats exactly. `make fuzz`
sets a large count and draws fresh random examples on every run."""


def fuzz_settings(ci_examples: int) -> settings:
    if FUZZ_EXAMPLES > 0:
        return settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False)
    return settings(max_examples=ci_examples, deadline=None, derandomize=True)


# ---------------------------------------------------------------- scalars

KNOWN_NODES = ("n0", "n1", "n2")  # the target is n0; n1 and n2 are its peers
MAX_ID = "m" * MAX_ID_LEN

ids = st.sampled_from([*KNOWN_NODES, "n9", MAX_ID]) | st.text(min_size=1, max_size=12)
addrs = st.sampled_from([f"sim://{n}" for n in (*KNOWN_NODES, "n9")] + [MAX_ID]) | st.text(
    min_size=1, max_size=12
)
maybe_ids = ids | st.just("")  # fields where "" means "none" (writer, node, by)


def ints(hi: int = MAX_INT, lo: int = 0) -> st.SearchStrategy[int]:
    edges = sorted(x for x in {lo, lo + 1, lo + 2, hi - 1, hi} if lo <= x <= hi)
    return st.sampled_from(edges) | st.integers(lo, hi)


# incarnations and record versions: generation boundaries and the wire's maximum
incarnations = ints() | st.sampled_from([
    (1 << GEN_SHIFT) - 1, 1 << GEN_SHIFT, MAX_GENERATION << GEN_SHIFT,
    ((MAX_GENERATION + 1) << GEN_SHIFT) - 1,
])  # fmt: skip


def nums(lo: float, hi: float) -> st.SearchStrategy[float]:
    edges = [lo, hi, math.nextafter(hi, lo), 0.0 if lo <= 0.0 <= hi else lo, 1e-300 if
             lo <= 1e-300 <= hi else hi]  # fmt: skip
    return st.sampled_from(edges) | st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def loads(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Loads and forecasts as resource records hold them: in thousandths (`quantized`)."""
    return nums(lo, hi).map(quantized)


def texts(most: int) -> st.SearchStrategy[str]:
    return st.sampled_from(["", "x" * most]) | st.text(max_size=16)


def id_texts(most: int) -> st.SearchStrategy[str]:
    return st.sampled_from(["x", "x" * most]) | st.text(min_size=1, max_size=16)


labels = st.dictionaries(id_texts(MAX_ID_LEN), texts(MAX_ID_LEN), max_size=3) | st.just(
    {f"k{i}": "v" for i in range(MAX_LABELS)}
)
states = st.sampled_from(TaskState)
times = nums(0.0, MAX_TIME)
durations = nums(0.0, MAX_DURATION)

# ---------------------------------------------------------------- membership bodies

member_updates = st.builds(MemberUpdate, node=ids, addr=addrs, incarnation=incarnations,
                           status=st.sampled_from(Status), by=maybe_ids)  # fmt: skip
resource_records = st.builds(
    ResourceRecord, node=ids, version=incarnations, cpus=nums(0.0, 1e18), memory=ints(),
    gpus=ints(), labels=labels, alloc_cpus=nums(0.0, 1e18), alloc_memory=ints(),
    alloc_gpus=ints(), load=loads(0.0, 1e6), mem_load=loads(0.0, 1e6),
    forecast=st.lists(loads(-1e6, 1e6), max_size=4).map(tuple)
    | st.just((1.0,) * MAX_FORECAST),
)  # fmt: skip
# a digest entry names any id (known, unknown, the target itself) with any claim, absurd too
digests = st.builds(Digest, node=ids, incarnation=incarnations, status=st.sampled_from(Status),
                    version=incarnations | st.just(0))  # fmt: skip
gossips = st.builds(Gossip, members=st.lists(member_updates, max_size=6).map(tuple),
                    resources=st.lists(resource_records, max_size=3).map(tuple))  # fmt: skip

membership_bodies = st.one_of(
    st.builds(Ping, target=ids, gossip=gossips),
    st.builds(Ack, target=ids, gossip=gossips),
    st.builds(PingReq, target=ids, target_addr=addrs, gossip=gossips),
    st.builds(Nack, target=ids),
    st.builds(Sync, digest=st.lists(digests, max_size=8).map(tuple), join=st.booleans()),
    st.builds(SyncReply, members=st.lists(member_updates, max_size=8).map(tuple),
              resources=st.lists(resource_records, max_size=4).map(tuple),
              want_members=st.lists(ids, max_size=8).map(tuple),
              want_resources=st.lists(ids, max_size=8).map(tuple)),
    st.builds(SyncPush, members=st.lists(member_updates, max_size=8).map(tuple),
              resources=st.lists(resource_records, max_size=4).map(tuple)),
    st.builds(GossipOnly, gossip=gossips),
)  # fmt: skip

# ---------------------------------------------------------------- placement bodies

argvs = st.sampled_from([("true",), ("x" * MAX_ARG_LEN,), ("p",) * MAX_ARGV]) | st.lists(
    texts(MAX_ARG_LEN), max_size=3
).map(lambda a: ("prog", *a))
specs = st.builds(
    TaskSpec, argv=argvs, cpus=nums(0.0, MAX_TASK_CPUS), memory=ints(), gpus=ints(),
    labels=labels, env=st.dictionaries(id_texts(MAX_ID_LEN), texts(64), max_size=3),
    cwd=texts(MAX_CWD_LEN), timeout=durations, deadline=durations, expected=durations,
)  # fmt: skip


def task_records(task_ids: st.SearchStrategy[str]) -> st.SearchStrategy[TaskRecord]:
    return st.builds(
        TaskRecord, id=task_ids, spec=specs, state=states, version=incarnations, writer=maybe_ids,
        replicas=st.lists(ids, max_size=4).map(tuple), attempt=ints(), node=maybe_ids,
        node_addr=addrs | st.just(""), exit_code=ints(MAX_EXIT_CODE, MIN_EXIT_CODE),
        reason=texts(MAX_REASON_LEN), submitted=times, placed=times, started=times,
        finished=times, stdout=texts(MAX_OUTPUT_TAIL), stderr=texts(MAX_OUTPUT_TAIL),
    )  # fmt: skip


def placement_bodies(task_ids: st.SearchStrategy[str],
                     records: st.SearchStrategy[TaskRecord]) -> st.SearchStrategy:  # fmt: skip
    """Every placement message kind. `task_ids` and `records` should lean on what the target
    holds, so that wrong attempts, rounds and states reach the code that checks them."""
    att, rnd = ints(), ints()
    return st.one_of(
        st.builds(TaskPut, record=records, submission=st.booleans()),
        st.builds(TaskPutAck, task_id=task_ids, version=incarnations, state=states,
                  ok=st.booleans(), error=texts(MAX_REASON_LEN), all_replicas=st.booleans()),
        st.builds(TaskGet, task_id=task_ids, req=ints()),
        st.builds(TaskGetReply, task_id=task_ids, req=ints(), record=st.none() | records),
        st.builds(TaskList, req=ints(), state=ints(max(TaskState), -1),
                  limit=ints(MAX_LIST_RECORDS, 1)),
        st.builds(TaskListReply, req=ints(), records=st.lists(records, max_size=3).map(tuple)),
        st.builds(TaskCancel, task_id=task_ids, req=ints()),
        st.builds(TaskCancelReply, task_id=task_ids, req=ints(), ok=st.booleans(), state=states,
                  error=texts(MAX_REASON_LEN)),
        st.builds(BidRequest, task_id=task_ids, attempt=att, round=rnd,
                  cpus=nums(0.0, MAX_TASK_CPUS), memory=ints(), gpus=ints(), labels=labels,
                  expected=durations),
        st.builds(Bid, task_id=task_ids, attempt=att, round=rnd, ok=st.booleans(),
                  headroom=nums(-MAX_HEADROOM, MAX_HEADROOM),
                  load=nums(0.0, MAX_BID_LOAD), queued=ints(),
                  reason=texts(MAX_REASON_LEN)),
        st.builds(Award, record=records, round=rnd),
        st.builds(AwardAck, task_id=task_ids, attempt=att, ok=st.booleans(), started=times,
                  reason=texts(MAX_REASON_LEN)),
        st.builds(Release, task_id=task_ids, attempt=att, round=rnd),
        st.builds(TaskReport, task_id=task_ids, attempt=att, state=states,
                  exit_code=ints(MAX_EXIT_CODE, MIN_EXIT_CODE),
                  reason=texts(MAX_REASON_LEN), started=times, finished=times,
                  stdout=texts(MAX_OUTPUT_TAIL), stderr=texts(MAX_OUTPUT_TAIL)),
        st.builds(ReportAck, task_id=task_ids, attempt=att, keep=st.booleans()),
    )  # fmt: skip


def envelopes(bodies: st.SearchStrategy) -> st.SearchStrategy[Message]:
    return st.builds(Message, sender=ids, sender_addr=addrs, seq=ints(), body=bodies)


# ---------------------------------------------------------------- TOML documents

# TOML has no null and no surrogates; control characters are escaped by `toml_dumps`
toml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
toml_scalars = (
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | toml_text
    | st.sampled_from([0, -1, 2**63 - 1, 1e300, -0.0, "", "8GiB", "1e19", "inf"])
)  # fmt: skip
toml_values = st.recursive(
    toml_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(toml_text, c, max_size=4),
    max_leaves=12,
)


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {v!r}")


def toml_dumps(doc: dict) -> str:
    """A TOML document of inline values (tomllib reads it back to `doc`; writing is not in the
    standard library and the harness must not depend on a writer that may be absent)."""
    return "".join(f"{_toml_str(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every position in a nested document of tables and arrays, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        items = list(doc.items())
    else:
        items = list(enumerate(doc)) if isinstance(doc, list) else []
    for k, v in items:
        out.extend(paths(v, (*prefix, k)))
    return out


def replaced(doc: object, path: tuple, value: object) -> object:
    """A copy of `doc` with the value at `path` replaced (None: removed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        new = dict(doc)
        if rest or value is not None:
            new[head] = replaced(doc[head], rest, value)
        else:
            del new[head]
        return new
    new_list = list(doc)
    if rest or value is not None:
        new_list[head] = replaced(doc[head], rest, value)
    else:
        del new_list[head]
    return new_list
