"""Stage: checkpoint / results. One WORKDIR, one run: an OS file lock held for a run's lifetime.

`hold(workdir)` takes an exclusive `fcntl.flock` on WORKDIR/.lock and writes who holds it (host,
PID, start time, command) into the file; it is released, and the file emptied, when the run
ends. A second run on the same WORKDIR stops at once (`WorkdirBusyError`, one line naming the
holder and what to do) instead of deleting the first one's checkpoints and mixing two runs'
results. The kernel drops the lock of a process that dies, even by SIGKILL, so a lock file that
still names a holder but can be locked was left by a dead process: it is taken over, with a
warning naming it. Nested `hold`s of one WORKDIR in one process (the command line, then the
loop) share the lock.

Multi-process jobs: process 0 alone holds the lock, and every process learns whether it got it,
so the whole job stops at once when the WORKDIR is busy.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys

from absl import logging

from ncf_jax import distributed
from ncf_jax.errors import WorkdirBusyError

LOCK_FILE = ".lock"
_held: dict[str, int] = {}  # resolved lock path -> nesting depth, in this process


def _holder_text(path: pathlib.Path) -> str:
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "an unknown process"
    if not record:
        return ""
    return (f"PID {record.get('pid')} on {record.get('host')} (since {record.get('started')}: "
            f"{record.get('command', '?')})")  # fmt: skip


def _acquire(path: pathlib.Path):
    """The open, locked file; WorkdirBusyError when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 -- held open for the run's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_text(path) or "another process"
        handle.close()
        raise WorkdirBusyError(
            f"{path.parent} is in use by {holder}: wait for that run to end, or use another "
            f"--workdir (two runs in one WORKDIR would delete each other's checkpoints)"
        ) from None
    stale = _holder_text(path)
    if stale:
        logging.warning("%s: taking over the lock of %s, which ended without releasing it",
                        path.parent, stale)  # fmt: skip
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:300]}  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    return handle


def _release(handle) -> None:
    handle.seek(0)
    handle.truncate()  # an empty file: nobody holds it (a non-empty one after a crash: stale)
    handle.flush()
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def hold(workdir):
    """Holds WORKDIR for the `with` block (module docstring)."""
    path = (pathlib.Path(workdir) / LOCK_FILE).absolute()
    key = str(path)
    if key in _held:  # this process holds it already
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    handle, error = None, None
    if distributed.is_main():
        try:
            handle = _acquire(path)
        except WorkdirBusyError as busy:
            error = busy
    if not distributed.agree(error is None):
        raise error or WorkdirBusyError(f"{path.parent} is in use by another run (see process 0)")
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        if handle is not None:
            _release(handle)
