"""The forecaster's file: an uncompressed zip of ``.npy`` members, verified on load.

Read with ``np.load(allow_pickle=False)``: no code runs from a file. Besides its arrays a file
holds ``format`` and ``version`` (checked against what the reader expects) and ``hash``, a
SHA-256 over every other member (name, dtype, shape, bytes), so a corrupt or edited file is
refused with a one-line reason. Writing is atomic and byte-identical for identical arrays
(members sorted, fixed zip timestamps), so rebuilding from the same training gives the same file.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from metalearn.errors import CheckpointError


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every member except ``hash``: name, dtype, shape and bytes, sorted by name."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        if k == "hash":
            continue
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(arrays: Mapping[str, np.ndarray], path: str | Path, fmt: str,
              version: int) -> str:
    """Write ``arrays`` plus format, version and hash atomically; return the hash."""
    body = {k: np.asarray(v) for k, v in arrays.items()}
    body["format"] = np.asarray(fmt)
    body["version"] = np.asarray(version, dtype=np.int64)
    body["hash"] = np.asarray(arrays_hash(body))
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for k in sorted(body):
            member = io.BytesIO()
            np.lib.format.write_array(member, body[k], allow_pickle=False)
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return str(body["hash"])


def read_npz(path: str | Path, fmt: str, version: int,
             rebuild: str = "make forecaster") -> dict[str, np.ndarray]:
    """Read and verify an export of format ``fmt`` and ``version``. Raises
    :class:`CheckpointError` with a one-line reason; ``rebuild`` says how to write a new one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such forecaster file (write it with `{rebuild}`)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(
            f"{path}: not a forecaster export (unreadable as a numpy .npz: {type(e).__name__})"
        ) from None
    if len(arrays) != len(names):
        raise CheckpointError(f"{path}: not a forecaster export (unexpected zip members)")
    got = arrays.get("format")
    if got is None or got.dtype.kind != "U" or str(got) != fmt:
        raise CheckpointError(f"{path}: not a forecaster export (format is not {fmt!r})")
    ver = arrays.get("version")
    if ver is None or ver.dtype.kind not in "iu" or ver.shape != () or int(ver) != version:
        raise CheckpointError(
            f"{path}: export version {None if ver is None else ver.tolist()!r} is not "
            f"supported (this code reads version {version}); rebuild it with `{rebuild}`"
        )
    h = arrays.get("hash")
    if h is None or h.dtype.kind != "U" or str(h) != arrays_hash(arrays):
        raise CheckpointError(f"{path}: export content hash mismatch (file corrupt or edited)")
    return arrays
