"""Background (non-agora) CPU load of simulated nodes, replayed from real machine traces.

A `BackgroundTrace` is one machine's CPU series (e.g. a ``gcd-vms`` file: CPU % at a 5-minute
step) laid on the virtual clock: sample k holds over ``[k*step - offset, (k+1)*step - offset)``,
piecewise constant, looping when the run outlasts the trace. ``step`` lets a scenario compress
time (one sample per 60 virtual seconds instead of 300); ``offset`` shifts a node's phase so
nodes sharing a trace are not in lockstep.

`assign_traces` gives N nodes traces deterministically from a seed, by default only machines
the shipped forecaster was not trained on (its file records their content digests), so
forecasts in a scenario are made on machines the model has never seen.

Traces come from a directory of trace files, a ``.tsv.gz`` bundle, or the name of a bundle
shipped in ``scenarios/traces/`` (`SHIPPED_TRACES`), so scenarios and tests run in a fresh
clone without the full data sets.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path

from metalearn.data import Series, load_bundle, load_dir
from metalearn.errors import DataError

log = logging.getLogger(__name__)

TRACE_STEP = 300.0  # seconds between samples in the gcd-vms data


class BackgroundTrace:
    """A piecewise-constant, looping load fraction (0..1) over virtual time."""

    __slots__ = ("name", "step", "offset", "_values", "_n", "_constant", "peak", "low")

    def __init__(
        self, values: Sequence[float], step: float = TRACE_STEP, offset: float = 0.0,
        name: str = "",
    ) -> None:  # fmt: skip
        """`values` are load fractions (clipped to 0..1); see `from_series` for CPU %."""
        if not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be a finite number > 0, got {step}")
        if not (offset >= 0 and math.isfinite(offset)):
            raise ValueError(f"offset must be a finite number >= 0, got {offset}")
        vals = [min(1.0, max(0.0, float(v))) for v in values]
        if not vals or any(v != v for v in vals):
            raise ValueError("a background trace needs at least one value and no NaN")
        self.name = name
        self.step = float(step)
        self.offset = float(offset)
        self._values = vals
        self._n = len(vals)
        self._constant = all(v == vals[0] for v in vals)
        self.peak = max(vals)  # highest load the trace ever reaches
        self.low = min(vals)

    @classmethod
    def from_series(
        cls, series: Series, step: float = TRACE_STEP, offset: float = 0.0
    ) -> BackgroundTrace:
        """From a loaded trace (values in CPU %)."""
        return cls([v / 100.0 for v in series.values.tolist()], step, offset, series.name)

    @classmethod
    def constant(cls, fraction: float) -> BackgroundTrace:
        return cls([fraction], name=f"constant {fraction}")

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(self._values)

    def __len__(self) -> int:
        return self._n

    @property
    def period(self) -> float:
        """Virtual seconds before the trace repeats."""
        return self._n * self.step

    def _bound(self, k: int) -> float:
        """Start time of sample slot k. Both `load` and `next_change` use only this."""
        return k * self.step - self.offset

    def _slot(self, t: float) -> int:
        k = math.floor((t + self.offset) / self.step)
        # floating-point division may be off by one near a boundary: settle on _bound exactly
        while self._bound(k + 1) <= t:
            k += 1
        while self._bound(k) > t:
            k -= 1
        return k

    def load(self, t: float) -> float:
        """Background load fraction at virtual time t."""
        if self._constant:
            return self._values[0]
        return self._values[self._slot(t) % self._n]

    def next_change(self, t: float) -> float:
        """The first time > t at which `load` takes a different value; inf if it never does."""
        if self._constant:
            return math.inf
        k = self._slot(t)
        v = self._values[k % self._n]
        for _ in range(self._n):
            k += 1
            if self._values[k % self._n] != v:
                return self._bound(k)
        return math.inf  # unreachable: a non-constant trace changes within one period

    def __repr__(self) -> str:
        return (
            f"BackgroundTrace({self.name!r}, {self._n} samples, step={self.step}, "
            f"offset={self.offset})"
        )


# ------------------------------------------------------------------ loading and assignment


TRACES_DIR = Path(__file__).resolve().parents[1] / "traces"
BUNDLE_SUFFIX = ".tsv.gz"
# bundles shipped with the package (see scenarios/traces/README.md for source and citation)
SHIPPED_TRACES: dict[str, Path] = {
    name: TRACES_DIR / f"{name}{BUNDLE_SUFFIX}" for name in ("gcd-vms", "bitbrains-rnd")
}


def resolve_traces(source: str | Path) -> Path:
    """The directory or bundle file that `source` names, resolved.

    A `str` that is exactly a `SHIPPED_TRACES` name means that bundle wherever the process
    runs (so a benchmark's default does not depend on the working directory); pass
    ``"./gcd-vms"`` or a `Path` for a local directory of that name. Anything else must be an
    existing directory or ``.tsv.gz`` file, else `DataError`.
    """
    if isinstance(source, str) and source in SHIPPED_TRACES:
        p = SHIPPED_TRACES[source]
        if not p.is_file():
            raise DataError(f"shipped traces {source!r}: {p} is missing from this installation")
        return p
    p = Path(source).resolve()
    if p.is_dir() or (p.is_file() and p.name.endswith(BUNDLE_SUFFIX)):
        return p
    what = "not a trace directory" if p.exists() else "no such file or directory"
    raise DataError(
        f"traces {str(source)!r}: {what}; expected a directory of trace files, a "
        f"{BUNDLE_SUFFIX} bundle, or a shipped bundle name ({', '.join(SHIPPED_TRACES)})"
    )


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> tuple[Series, ...]:
    p = Path(path)
    return tuple(load_dir(p) if p.is_dir() else load_bundle(p))


def load_traces(source: str | Path) -> tuple[Series, ...]:
    """Every series of `source` (see `resolve_traces`), parsed once per process."""
    return _load_cached(str(resolve_traces(source)))


@functools.lru_cache(maxsize=4)
def _trained_cached(path: str, mtime_ns: int) -> frozenset[str]:
    from metalearn.npz_file import read_npz
    from metalearn.peak_runtime import FORMAT, VERSION

    return frozenset(str(d) for d in read_npz(path, FORMAT, VERSION)["train_digests"].tolist())


def trained_digests(forecaster_path: str | Path | None = None) -> frozenset[str]:
    """Content digests of the series the forecaster file was trained on (None = the shipped
    one, `metalearn.peak_runtime.DEFAULT_PATH`)."""
    from metalearn.peak_runtime import DEFAULT_PATH

    p = Path(forecaster_path if forecaster_path is not None else DEFAULT_PATH).resolve()
    mtime = p.stat().st_mtime_ns if p.exists() else 0  # missing: read_npz says so
    return _trained_cached(str(p), mtime)


def assign_traces(
    source: str | Path,
    n: int,
    seed: int,
    step: float = TRACE_STEP,
    *,
    exclude_trained: bool = True,
    checkpoint: str | Path | None = None,
) -> list[BackgroundTrace]:
    """Background traces for n nodes, deterministic in (traces' contents, n, seed, step).

    `source` is a directory, a bundle or a shipped bundle name (`resolve_traces`).

    Machines are drawn without replacement in a seeded order (reused only when n exceeds the
    pool); each node gets a seeded phase offset in [0, period). With `exclude_trained`, machines
    whose series the forecaster `checkpoint` (None = the shipped one) was trained on are left
    out; raises `DataError` if none remain (pass ``exclude_trained=False`` to use them all).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    pool = sorted(load_traces(source), key=lambda s: (s.name, s.digest))
    if exclude_trained:
        trained = trained_digests(checkpoint)
        unseen = [s for s in pool if s.digest not in trained]
        log.info("%s: %d of %d machines unseen by the forecaster", source, len(unseen),
                 len(pool))  # fmt: skip
        if not unseen:
            raise DataError(
                f"{source}: every machine was used to train the forecaster "
                "(use exclude_trained=False to replay them anyway)"
            )
        pool = unseen
    rng = random.Random(f"{seed}:background")
    order = rng.sample(pool, len(pool))
    out = []
    for i in range(n):
        s = order[i % len(order)]
        offset = rng.random() * len(s.values) * step
        out.append(BackgroundTrace.from_series(s, step, offset))
    return out
