"""Trace loading (both formats, clear errors), windowing and the split by machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metalearn.data import (
    load_dir,
    load_file,
    split_by_machine,
)
from metalearn.errors import DataError, ForecastError


def test_whitespace_format_uses_cpu_column(tmp_path: Path) -> None:
    p = tmp_path / "vm_1_2"
    p.write_text("8.5 6.1\n9.0\t6.2\n\n10.25 7\n")
    s = load_file(p)
    assert s.name == "vm_1_2"
    assert s.values.tolist() == [8.5, 9.0, 10.25]
    assert s.group == "vm_1"
    (tmp_path / "vm_12").write_text("1 1\n")
    assert load_file(tmp_path / "vm_12").group == "vm_12"


def test_csv_format_with_header(tmp_path: Path) -> None:
    p = tmp_path / "node.csv"
    p.write_text("timestamp,value\n2024-01-01T00:00,1.5\n2024-01-01T00:05,2.5\n")
    assert load_file(p).values.tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1 2\n3 4\nabc 5\n", 3, "not a number"),
        ("1 2\nnan 4\n", 2, "missing or non-finite"),
        ("timestamp,value\nt0,1\nt1,\n", 3, "expected 'timestamp,value'"),
        ("timestamp,value\nt0,1\nt1,x\n", 3, "not a number"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = tmp_path / "bad"
    p.write_text(text)
    with pytest.raises(DataError, match=rf"bad:{line}: {what}") as e:
        load_file(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, ForecastError)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n  \n")
    (tmp_path / "hdr.csv").write_text("timestamp,value\n")
    with pytest.raises(DataError, match="empty file"):
        load_file(tmp_path / "empty")
    with pytest.raises(DataError, match="no data rows"):
        load_file(tmp_path / "hdr.csv")


def test_load_dir_fails_or_skips_and_counts(tmp_path: Path, caplog) -> None:
    (tmp_path / "a").write_text("1 1\n2 2\n3 3\n")
    (tmp_path / "b").write_text("1 1\noops\n")
    (tmp_path / "c").write_text("1 1\n")  # too short for min_length=3
    (tmp_path / "README.md").write_text("not a trace\n")
    (tmp_path / ".hidden").write_text("x\n")
    with pytest.raises(DataError, match="b:2"):
        load_dir(tmp_path, min_length=3)
    caplog.set_level("INFO")
    got = load_dir(tmp_path, min_length=3, skip_bad=True)
    assert [s.name for s in got] == ["a"]
    assert "1 unreadable files skipped, 1 series shorter than 3" in caplog.text


def test_load_dir_without_usable_series(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no usable series"):
        load_dir(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_dir(tmp_path / "missing")


def _series_dir(tmp_path: Path, groups: int, per_group: int) -> Path:
    rng = np.random.default_rng(1)
    for g in range(groups):
        for i in range(per_group):
            vals = rng.uniform(5, 90, size=20)
            (tmp_path / f"vm_{g}_{i}").write_text("\n".join(f"{v} 1" for v in vals))
    return tmp_path


def test_split_is_by_machine_group_and_deterministic(tmp_path: Path) -> None:
    series = load_dir(_series_dir(tmp_path, groups=60, per_group=3))
    train, held = split_by_machine(series, 0.25, seed=0)
    assert len(train) + len(held) == len(series)
    tg, hg = {s.group for s in train}, {s.group for s in held}
    assert tg.isdisjoint(hg)
    assert {s.name for s in train}.isdisjoint({s.name for s in held})
    assert 0.1 < len(hg) / 60 < 0.45
    # independent of listing order; dependent on the seed
    train2, _ = split_by_machine(list(reversed(series)), 0.25, seed=0)
    assert sorted(s.name for s in train2) == sorted(s.name for s in train)
    train3, _ = split_by_machine(series, 0.25, seed=1)
    assert sorted(s.name for s in train3) != sorted(s.name for s in train)
    assert split_by_machine(series, 0.0, seed=0)[1] == []
