"""Checkpoint file: save/load with a format name, a version and a content hash.

A checkpoint is a plain ``torch.save`` of a dict holding only tensors, numbers, strings, lists
and dicts, so it loads with ``torch.load(weights_only=True)`` (no pickled code). The ``hash``
entry is a SHA-256 over a canonical encoding of every other entry; loading recomputes it, so a
truncated or edited file is rejected with a clear :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalearn.errors import CheckpointError

FORMAT = "agora-forecaster"
VERSION = 1

DEFAULT_PATH = Path(__file__).with_name("forecaster.pt")


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj):
            h.update(json.dumps(str(k)).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    else:
        h.update(json.dumps(obj).encode())


def content_hash(payload: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "hash"})
    return h.hexdigest()


def save(payload: dict[str, Any], path: str | Path) -> str:
    """Write ``payload`` (plus format, version and hash) atomically; return the hash."""
    body = dict(payload)
    body["format"] = FORMAT
    body["version"] = VERSION
    body["hash"] = content_hash(body)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    buf = io.BytesIO()
    torch.save(body, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return body["hash"]


def load(path: str | Path | None = None) -> dict[str, Any]:
    """Load and verify a checkpoint. Raises :class:`CheckpointError` with a one-line reason."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        body = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
        OSError, KeyError, AttributeError, TypeError, IndexError,
    ) as e:
        raise CheckpointError(
            f"{path}: not a forecaster checkpoint (unreadable as a plain torch file: "
            f"{type(e).__name__})"
        ) from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a forecaster checkpoint (format is not {FORMAT!r})")
    if body.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {body.get('version')!r} is not supported "
            f"(this code reads version {VERSION}); retrain it with `agora forecast train`"
        )
    if body.get("hash") != content_hash(body):
        raise CheckpointError(f"{path}: checkpoint content hash mismatch (file corrupt or edited)")
    return body


def export_numpy(pt_path: str | Path | None = None, npz_path: str | Path | None = None) -> str:
    """Write the torch-free export of a checkpoint (read by :mod:`metalearn.numpy_runtime`).

    Default ``pt_path``: the shipped checkpoint; default ``npz_path``: ``pt_path`` with the
    suffix ``.npz``. The export holds the meta-initialization, its inner lrs (a scalar lr is
    expanded to one array per parameter), the normalizer, window/horizon/hidden/relative,
    inner steps and shots, and the content hash of the checkpoint. Returns the export's hash.
    """
    from metalearn import numpy_runtime as nr

    pt = Path(pt_path) if pt_path is not None else DEFAULT_PATH
    out = Path(npz_path) if npz_path is not None else pt.with_suffix(".npz")
    body = load(pt)
    try:
        cfg, adapt, norm = body["config"], body["adapt"], body["normalizer"]
        params = {n: body["meta_params"][n].detach().cpu().float() for n in nr.PARAM_NAMES}
        lrs = adapt.get("inner_lrs")
        arrays: dict[str, Any] = {
            "source_hash": np.asarray(body["hash"]),
            "window": np.asarray(int(cfg["window"]), dtype=np.int64),
            "horizon": np.asarray(int(cfg["horizon"]), dtype=np.int64),
            "hidden": np.asarray(int(cfg["hidden"]), dtype=np.int64),
            "relative": np.asarray(bool(cfg.get("relative", False))),
            "inner_steps": np.asarray(int(adapt["inner_steps"]), dtype=np.int64),
            "shots": np.asarray(int(adapt["shots"]), dtype=np.int64),
            "mean": np.asarray(float(norm["mean"]), dtype=np.float64),
            "std": np.asarray(float(norm["std"]), dtype=np.float64),
        }
        for n, t in params.items():
            arrays[f"param.{n}"] = t.numpy().copy()
            lr = (torch.full_like(t, float(adapt["inner_lr"])) if lrs is None
                  else lrs[n].detach().cpu().float())
            arrays[f"lr.{n}"] = lr.numpy().copy()
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{pt}: checkpoint lacks what the export needs ({e!r})") from None
    nr.NumpyForecaster.from_arrays(arrays, str(pt))  # same validation as loading the export
    return nr.write_npz(arrays, out)
