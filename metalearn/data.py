"""Loading load traces from a directory or a bundle, and splitting them by machine.

Two file formats are read, one series (one machine) per file:

* whitespace columns, as in the Google-cluster ``gcd-vms`` set: ``cpu mem`` per line, one line
  per 5-minute step. Only the first column (CPU %) is used.
* CSV with the header ``timestamp,value``: one ``timestamp,value`` row per step. Only
  ``value`` is used; timestamps are kept as given (rows must already be in time order).

A line that cannot be parsed (non-numeric, missing value, NaN/inf) is a :class:`DataError`
naming the file and line. An empty file is a :class:`DataError` too. :func:`load_dir` can
instead skip unusable files and count them (``skip_bad=True``); it never silently drops a line.

A *bundle* (:func:`load_bundle`) packs many series into one gzip file, one per line:
``name<TAB>v1 v2 v3 ...``, the values being the original text tokens, so a bundled series
parses to the same float64 values and the same :attr:`Series.digest` as its source file.
A first line starting with ``#`` is a comment (where the data comes from).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalearn.errors import DataError

log = logging.getLogger(__name__)

CSV_HEADER = ("timestamp", "value")


@dataclass(frozen=True)
class Series:
    """One machine's load series (CPU %, in time order)."""

    name: str
    values: np.ndarray  # float64, shape (n,)
    digest: str  # short hash of the values, identifies the series across directories

    @property
    def group(self) -> str:
        """Machine group used for splitting: the name without a trailing ``_<n>`` suffix.

        In gcd-vms, ``vm_<id>_<n>`` files share an ``<id>``; keeping a group on one side of the
        split avoids leaking related series from training into evaluation. The suffix is only
        stripped when the rest still contains a digit, so ``vm_12`` is a group of its own.
        In bitbrains-rnd, ``vmNNN-2013-M.txt`` are the months of one VM: the group is ``vmNNN``.
        """
        stem = re.sub(r"-\d{4}-\d{1,2}(\.txt)?$", "", self.name)
        stem = re.sub(r"_\d+$", "", stem)
        return stem if re.search(r"\d", stem) else self.name


def series_digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()[:16]


def _parse_float(text: str, path: Path, lineno: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: not a number: {text!r}") from None
    if not math.isfinite(v):
        raise DataError(f"{path}:{lineno}: missing or non-finite value: {text!r}")
    return v


def load_file(path: str | Path) -> Series:
    """Read one trace file (either format). Raises :class:`DataError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: empty file")
    first = next(i for i, line in enumerate(lines) if line.strip())
    header = tuple(c.strip().lower() for c in lines[first].split(","))
    values: list[float] = []
    if header == CSV_HEADER:
        for i in range(first + 1, len(lines)):
            line = lines[i].strip()
            if not line:
                continue
            cols = line.split(",")
            if len(cols) != 2 or not cols[1].strip():
                raise DataError(f"{path}:{i + 1}: expected 'timestamp,value', got {line!r}")
            values.append(_parse_float(cols[1].strip(), path, i + 1))
    else:
        for i in range(first, len(lines)):
            line = lines[i].strip()
            if not line:
                continue
            values.append(_parse_float(line.split()[0], path, i + 1))
    if not values:
        raise DataError(f"{path}: no data rows")
    arr = np.asarray(values, dtype=np.float64)
    return Series(name=path.name, values=arr, digest=series_digest(arr))


def _is_trace_file(p: Path) -> bool:
    return (
        p.is_file()
        and not p.name.startswith(".")
        and not p.name.upper().startswith("README")
        and p.suffix.lower() != ".md"
    )


def load_dir(
    directory: str | Path, *, min_length: int = 1, skip_bad: bool = False
) -> list[Series]:
    """Load every trace file in ``directory`` (not recursive), sorted by name.

    Hidden files, ``README*`` and ``*.md`` are ignored. Series shorter than ``min_length`` are
    skipped and counted (logged). With ``skip_bad`` unreadable files are skipped and counted
    too; otherwise the first one raises :class:`DataError`. A directory with no usable series
    raises :class:`DataError`.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory")
    files = sorted(p for p in d.iterdir() if _is_trace_file(p))
    out: list[Series] = []
    bad = short = 0
    for p in files:
        try:
            s = load_file(p)
        except DataError as e:
            if not skip_bad:
                raise
            bad += 1
            log.warning("skipping %s", e)
            continue
        if len(s.values) < min_length:
            short += 1
            continue
        out.append(s)
    if bad or short:
        log.info(
            "%s: %d series loaded, %d unreadable files skipped, %d series shorter than %d "
            "points skipped", d, len(out), bad, short, min_length,
        )
    if not out:
        raise DataError(
            f"{d}: no usable series ({len(files)} files, {bad} unreadable, "
            f"{short} shorter than {min_length} points)"
        )
    return out


def _bundle_values(tokens: list[str], path: Path, lineno: int, name: str) -> np.ndarray:
    """Parse one bundle line's tokens; the first bad one is named with its position."""
    try:
        arr = np.asarray([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        arr = None
    if arr is not None and bool(np.isfinite(arr).all()):
        return arr
    for k, tok in enumerate(tokens):  # slow path only to say which value is bad
        try:
            _parse_float(tok, path, lineno)
        except DataError as e:
            raise DataError(f"{e} (value {k + 1} of {name!r})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def load_bundle(path: str | Path) -> list[Series]:
    """Every series of a ``.tsv.gz`` bundle, in file order.

    Strict like :func:`load_file`: a malformed line, a bad value or a repeated name is a
    :class:`DataError` naming file and line; nothing is dropped. Blank lines carry no data
    and are ignored. A bundle with no series is a :class:`DataError`.
    """
    path = Path(path)
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except OSError as e:  # missing file, or not gzip (gzip.BadGzipFile is an OSError)
        raise DataError(f"{path}: cannot read bundle: {e.strerror or e}") from None
    except (EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a gzip-compressed text bundle: {e}") from None
    out: list[Series] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(text.split("\n")):
        lineno = i + 1
        if i == 0 and line.startswith("#"):
            continue
        if not line.strip():
            continue
        name, tab, rest = line.partition("\t")
        if not tab or not name or name != name.strip() or "\t" in rest:
            raise DataError(f"{path}:{lineno}: expected 'name<TAB>values', got {line[:60]!r}")
        if name in seen:
            raise DataError(f"{path}:{lineno}: series {name!r} already on line {seen[name]}")
        tokens = rest.split()
        if not tokens:
            raise DataError(f"{path}:{lineno}: series {name!r} has no values")
        values = _bundle_values(tokens, path, lineno, name)
        seen[name] = lineno
        out.append(Series(name=name, values=values, digest=series_digest(values)))
    if not out:
        raise DataError(f"{path}: bundle holds no series")
    return out


def _group_score(group: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_by_machine(
    series: list[Series], holdout_fraction: float, seed: int,
    held_groups: frozenset[str] = frozenset(),
) -> tuple[list[Series], list[Series]]:
    """Deterministic split by machine group: (train, held_out).

    Each group is placed by a hash of (seed, group name), so the split does not depend on the
    directory listing order and a machine's series is never on both sides. Groups in
    ``held_groups`` are held out whatever their hash (machines that must stay unseen, such as
    those of the shipped trace bundles).
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout fraction must be in [0, 1), got {holdout_fraction}")

    def held_out(s: Series) -> bool:
        return s.group in held_groups or _group_score(s.group, seed) < holdout_fraction

    train = [s for s in series if not held_out(s)]
    held = [s for s in series if held_out(s)]
    return train, held
