"""A JSON-lines log of what one agent did, for invariant checkers that never read its memory.

Each event is one JSON object on one line: ``{"t": <time.time()>, "node": ..., "ev": ..., ...}``.
The agent's events and their fields are listed in docs/agent.md ("Event log").

Why it is written this way:

- one unbuffered ``write`` per line, opened in append mode: a SIGKILLed agent loses at most a
  torn last line, and a restarted agent (same file) continues it;
- when such a restart finds a torn last line it cuts it off first, so only the very last line of
  a file can ever be incomplete — `read_events` skips that one and refuses any other bad line;
- a write that fails (disk full, file removed from under a read-only mount, ...) never stops the
  agent: one warning, the log is disabled, `errors` counts it (``event_log_errors`` in stats).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_CHUNK = 65536


def _cut_torn_tail(path: Path, size: int) -> int:
    """Truncate after the last newline if the file does not end with one; bytes removed."""
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            f.seek(start)
            nl = f.read(end - start).rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
    os.truncate(path, keep)
    return size - keep


class EventLog:
    """Appends events to `path`. `write` never raises; `close` is idempotent."""

    def __init__(self, path: str | Path, node: str = "") -> None:
        self.path = Path(path)
        self.node = node
        self.errors = 0
        self._f: IO[bytes] | None = None
        try:
            f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as e:
            self._fail("cannot open", e)
            return
        try:
            size = f.seek(0, os.SEEK_END)
            cut = _cut_torn_tail(self.path, size) if size else 0
        except OSError as e:
            f.close()
            self._fail("cannot check the end of", e)
            return
        if cut:
            log.warning("event log %s: cut a torn last line (%d bytes) left by an earlier run",
                        self.path, cut)  # fmt: skip
        self._f = f

    @property
    def enabled(self) -> bool:
        return self._f is not None

    def write(self, ev: str, **fields: Any) -> None:
        """One event: ``t`` (now, unless given), ``node``, ``ev``, then `fields` in order."""
        if self._f is None:
            return
        rec: dict[str, Any] = {"t": fields.pop("t", None) or time.time(), "node": self.node,
                               "ev": ev, **fields}  # fmt: skip
        try:
            data = memoryview((json.dumps(rec, separators=(",", ":"), default=str) + "\n")
                              .encode())  # fmt: skip
        except (TypeError, ValueError) as e:  # a bug in a caller's fields; skip this event
            self.errors += 1
            log.debug("event %s not serializable: %r", ev, e)
            return
        try:
            while data:
                n = self._f.write(data)
                data = data[n or 0 :]
        except OSError as e:
            self._fail("cannot write", e)
            self._close_file()

    def close(self) -> None:
        self._close_file()

    def _close_file(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError:  # pragma: no cover - nothing is buffered; nothing to lose
                pass

    def _fail(self, what: str, e: OSError) -> None:
        self.errors += 1
        log.warning("event log disabled: %s %s: %s", what, self.path, e.strerror or e)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every event in a log, in order. A torn or invalid *last* line is skipped (an agent killed
    mid-write); any other line that is not a JSON object raises ValueError naming file:line."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as it should
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        try:
            ev = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError too
            ev = None
        if isinstance(ev, dict):
            out.append(ev)
        elif i == len(lines) - 1:
            log.debug("%s:%d: torn last line skipped", path, i + 1)
        else:
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {raw[:80]!r}")
    return out
