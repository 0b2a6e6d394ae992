"""The trace bundles shipped in scenarios/traces/: they load, are what they claim, fail loudly."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from metalearn.data import load_bundle, load_file
from metalearn.errors import DataError
from scenarios.sim.background import (
    SHIPPED_TRACES,
    assign_traces,
    load_traces,
    resolve_traces,
    trained_digests,
)

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"gcd-vms": 96, "bitbrains-rnd": 48}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_shipped_bundles_load_with_unique_names_and_real_values(name: str) -> None:
    path = SHIPPED_TRACES[name]
    assert path == ROOT / "scenarios" / "traces" / f"{name}.tsv.gz" and path.is_file()
    assert gzip.decompress(path.read_bytes()).startswith(b"# ")  # the source comment
    series = load_bundle(path)
    assert len(series) == COUNTS[name]
    assert len({s.name for s in series}) == len(series)
    assert len({s.digest for s in series}) == len(series)
    for s in series:
        assert s.values.dtype == np.float64 and len(s.values) >= 288
        assert np.all((s.values >= 0) & (s.values <= 100)), s.name  # CPU %
        assert s.values.std() > 0, s.name
    assert path.stat().st_size < 2_000_000


def test_gcd_bundle_is_unseen_by_the_shipped_forecaster() -> None:
    series = load_bundle(SHIPPED_TRACES["gcd-vms"])
    trained = trained_digests()
    assert len(trained) > 0
    assert not [s.name for s in series if s.digest in trained]
    assert all(len(s.values) == 288 for s in series)
    # every node keeps its machine's unseen status: nothing is filtered out
    assert len(assign_traces("gcd-vms", 200, seed=1)) == 200
    assert {t.name for t in assign_traces("gcd-vms", 96, seed=1)} == {s.name for s in series}


def test_bitbrains_bundle_mixes_daily_cycles_and_others() -> None:
    def day_ac(v: np.ndarray) -> float:
        return float(np.corrcoef(v[:-288], v[288:])[0, 1])

    series = load_bundle(SHIPPED_TRACES["bitbrains-rnd"])
    assert all(s.name.endswith("-2013-8.txt") for s in series)
    assert sum(day_ac(s.values) > 0.3 for s in series) == 24


def _recorded_digests() -> dict[tuple[str, str], str]:
    """scenarios/traces/digests.tsv: each series' digest as loaded from its original file."""
    out = {}
    for line in (ROOT / "scenarios" / "traces" / "digests.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            bundle, name, digest = line.split("\t")
            out[(bundle, name)] = digest
    return out


def test_bundled_series_are_the_original_ones() -> None:
    """Against the digests recorded from the original files when the bundles were made. The
    comparison with the original files themselves needs the full data sets, which a fresh
    clone does not have: `scripts/make_trace_bundles.py --check` does it, byte for byte."""
    recorded = _recorded_digests()
    for name in sorted(COUNTS):
        series = load_bundle(SHIPPED_TRACES[name])
        assert {n for b, n in recorded if b == name} == {s.name for s in series}, name
        for s in series:
            assert s.digest == recorded[(name, s.name)], s.name


def test_load_traces_accepts_a_name_a_bundle_path_and_a_directory(tmp_path: Path) -> None:
    by_name = load_traces("gcd-vms")
    assert len(by_name) == 96
    assert load_traces(str(SHIPPED_TRACES["gcd-vms"])) is by_name  # same resolved path, cached
    assert resolve_traces("bitbrains-rnd") == SHIPPED_TRACES["bitbrains-rnd"]
    other = _write(tmp_path / "two.tsv.gz", "a\t1 2 3\nb\t4 5.5 6\n")
    assert [s.name for s in load_traces(other)] == ["a", "b"]
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "vm_1_1").write_text("1.5 2\n2.5 3\n")
    assert [s.values.tolist() for s in load_traces(tmp_path / "dir")] == [[1.5, 2.5]]


def test_unknown_traces_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'gcd-vm'.*no such file.*shipped bundle name "
                                        r"\(gcd-vms, bitbrains-rnd\)"):  # fmt: skip
        load_traces("gcd-vm")
    (tmp_path / "x.txt").write_text("1\n")
    with pytest.raises(DataError, match="not a trace directory"):
        assign_traces(tmp_path / "x.txt", 2, seed=1)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("# c\na\t1 2\nb 3 4\n", 3, "expected 'name<TAB>values'"),
        ("a\t1 2\n\tb 3\n", 2, "expected 'name<TAB>values'"),
        ("a\t1 2\nb\t1\t2\n", 2, "expected 'name<TAB>values'"),
        ("a\t1 2\nb\t\n", 2, "series 'b' has no values"),
        ("a\t1 2\nb\t3 x 4\n", 2, r"not a number: 'x' \(value 2 of 'b'\)"),
        ("a\t1 2\nb\t3 4 nan\n", 2, r"missing or non-finite value: 'nan' \(value 3 of 'b'\)"),
        ("a\t1 2\nb\t3 inf\n", 2, "missing or non-finite value: 'inf'"),
        ("a\t1 2\nb\t3\na\t5\n", 3, "series 'a' already on line 1"),
        ("a\t1 2\n# late comment\n", 2, "expected 'name<TAB>values'"),
    ],
)
def test_malformed_bundle_line_is_a_data_error_naming_it(
    tmp_path: Path, text: str, line: int, what: str
) -> None:
    path = _write(tmp_path / "bad.tsv.gz", text)
    with pytest.raises(DataError, match=rf"bad\.tsv\.gz:{line}: {what}"):
        load_bundle(path)


def test_unreadable_or_empty_bundles_are_data_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tsv.gz"
    plain.write_text("a\t1 2\n")
    with pytest.raises(DataError, match="plain.tsv.gz"):
        load_bundle(plain)
    with pytest.raises(DataError, match="truncated.tsv.gz"):
        good = gzip.compress(b"a\t1 2 3\n" * 100, mtime=0)
        (tmp_path / "truncated.tsv.gz").write_bytes(good[: len(good) // 2])
        load_bundle(tmp_path / "truncated.tsv.gz")
    with pytest.raises(DataError, match="no series"):
        load_bundle(_write(tmp_path / "empty.tsv.gz", "# only a comment\n\n"))
    with pytest.raises(DataError, match="cannot read"):
        load_bundle(tmp_path / "missing.tsv.gz")


def test_bundle_round_trips_tokens_bit_for_bit(tmp_path: Path) -> None:
    tokens = ["8.533", "6.140000000000001", "1e-3", "0.1", "100"]
    s = load_bundle(_write(tmp_path / "t.tsv.gz", "m\t" + " ".join(tokens) + "\n"))[0]
    f = tmp_path / "m"
    f.write_text("".join(f"{t} 0\n" for t in tokens))
    assert s.digest == load_file(f).digest and s.values.tolist() == [float(t) for t in tokens]
