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
from collections.abc import Iterator
from pathlib import Path

from aifactory.dataset import DatasetError
from aifactory.locks import LockHeld, file_lock


def lock_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "dataset" / ".build.lock"


@contextlib.contextmanager
def dataset_lock(data_dir: Path | str, wait_sec: float, holder: str = "") -> Iterator[None]:
    """Hold the dataset lock; waits up to `wait_sec`, then raises DatasetError naming the holder."""
    path = lock_path(data_dir)
    try:
        with file_lock(path, holder, wait_sec):
            yield
    except LockHeld as held:
        raise DatasetError(
            f"the dataset in {path.parent} is being built by {held.holder}; waited {wait_sec:g}s "
            "(DATASET_LOCK_WAIT_SEC): try again when that build has finished"
        ) from None
