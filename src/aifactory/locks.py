"""Exclusive locks between processes on one machine: flock on a file that says who holds it.

Used where exactly one process may write: the dataset's shards (one builder), a checkpoint folder (one
trainer), a serving folder (one inference engine). The kernel releases a flock when its process dies,
so a killed holder never leaves a lock taken. The holder writes a line about itself into the file, so
whoever is refused can say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote about itself."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.holder = holder


def this_process() -> str:
    """Who we are, for the message a refused process shows ("aifactory dataset build, pid 123 on host")."""
    what = " ".join(Path(arg).name for arg in sys.argv[:3]) or "python"
    return f"{what}, pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def file_lock(path: Path, holder: str = "", wait_sec: float = 0.0, poll_sec: float = 0.1) -> Iterator[None]:
    """Hold an exclusive lock on `path`; waits up to `wait_sec` (0: not at all), then raises LockHeld."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    deadline = time.monotonic() + wait_sec
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                handle.seek(0)
                raise LockHeld(path, handle.read().strip() or "another process")
            time.sleep(poll_sec)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write((holder or this_process()) + "\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
