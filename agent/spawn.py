"""Start a task's process without forking the agent, and learn of its exit without a thread.

Why: a fork copies the agent's page tables (a 40+ MB Python process: 3–4 ms of CPU per task) and
asyncio's child watcher starts a thread per child. `os.posix_spawn` uses vfork-style cloning
(about 0.2 ms), and a pidfd in the event loop says when the child has exited.

What fork gave us for free and posix_spawn cannot do in the child is done by two tiny programs
that exec the task in place (so the pid, the session and the process group stay the task's own):
util-linux's ``setpriv --pdeathsig KILL`` (the task dies with its agent: its owner re-places a
run whose node failed, so an orphan would use resources no ledger accounts for) and, for a
working directory, ``/bin/sh`` doing ``cd`` then ``exec``. Errors exec would report in the child
(not found, not executable, no such directory) are found here first, so the reason is the same as
before. Where setpriv or pidfds are missing, `available()` is false and the executor forks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence

SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
SHELL = "/bin/sh"
# `cd` to $0, then exec the rest; 126 if the directory went away since it was checked
_CD_THEN_EXEC = 'cd -- "$0" || exit 126; exec "$@"'


def available() -> bool:
    """True where a task can be spawned this way (Linux with setpriv and pidfd_open)."""
    return SETPRIV is not None and hasattr(os, "pidfd_open") and hasattr(os, "posix_spawn")


def resolve(argv0: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The file exec would run for `argv0`, or the OSError exec would raise.

    A name without a slash is looked up in the task's own PATH, as `subprocess` does; a path with a
    slash is taken relative to the task's working directory."""
    if "/" in argv0:
        path = os.path.join(cwd, argv0) if cwd else argv0
        if not os.path.exists(path):
            raise FileNotFoundError(2, "No such file or directory", argv0)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(13, "Permission denied", argv0)
        return os.path.abspath(path)
    for d in os.get_exec_path(dict(env)):
        path = os.path.join(d, argv0)
        if cwd and not os.path.isabs(path):
            path = os.path.join(cwd, path)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    raise FileNotFoundError(2, "No such file or directory", argv0)


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, stdout: int, stderr: int,
) -> int:  # fmt: skip
    """Start `argv` in its own session (pgid = pid), stdin from /dev/null; returns the pid.

    Raises the OSError exec would (see `resolve`)."""
    if SETPRIV is None:
        raise RuntimeError("spawn() needs setpriv; check available() first")
    exe = resolve(argv[0], env, cwd)
    if cwd:
        cwd = os.path.abspath(cwd)  # an absolute `cd` ignores CDPATH
        if not os.path.isdir(cwd):
            raise NotADirectoryError(20, "Not a directory", cwd)
        inner = [SHELL, "-c", _CD_THEN_EXEC, cwd, exe, *argv[1:]]
    else:
        inner = [exe, *argv[1:]]
    full = [SETPRIV, "--pdeathsig", "KILL", "--", *inner]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawn(SETPRIV, full, dict(env), file_actions=actions, setsid=True)


async def wait(pid: int) -> int:
    """The child's return code (negative: killed by that signal), once it has exited; reaps it."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    try:
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            while True:
                got, status = os.waitpid(pid, os.WNOHANG)
                if got == pid:
                    return os.waitstatus_to_exitcode(status)
                await done
                done = loop.create_future()
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
