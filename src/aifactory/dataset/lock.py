"""The dataset lock: one builder at a time writes a DATA_DIR's shards, be it the engine or the CLI.

Two builders appending to the same shards would each commit a manifest that knows only its own
appends, while the other keeps writing past it: silent index corruption. So `build()` holds an
exclusive flock on DATA_DIR/dataset/.build.lock for its whole run. A second builder waits up to
DATASET_LOCK_WAIT_SEC for it (a build is usually short) and then refuses with a message naming the
holder, which the lock file records ("aifactory dataset build, pid 123 on host"). flock is released
by the kernel when its process dies, so a killed builder never leaves the lock taken.
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

from aifactory.dataset import DatasetError

POLL_SEC = 0.1  # how often a waiting builder tries the lock again


def lock_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "dataset" / ".build.lock"


def default_holder() -> str:
    """Who we are, for the message a refused builder shows."""
    what = " ".join(Path(arg).name for arg in sys.argv[:3]) or "python"
    return f"{what}, pid {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def dataset_lock(data_dir: Path | str, wait_sec: float, holder: str = "") -> Iterator[None]:
    """Hold the dataset lock; waits up to `wait_sec`, then raises DatasetError naming the holder."""
    path = lock_path(data_dir)
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
                who = handle.read().strip() or "another process"
                raise DatasetError(
                    f"the dataset in {path.parent} is being built by {who}; waited {wait_sec:g}s "
                    "(DATASET_LOCK_WAIT_SEC): try again when that build has finished"
                )
            time.sleep(POLL_SEC)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write((holder or default_holder()) + "\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
