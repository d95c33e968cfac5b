"""The background checkpoint writer: saves run off the training path, from a snapshot.

A save used to stop training for as long as it took to serialise, hash, write and fsync the model and
its optimizer (about 1.1 GB for `base`). Now the training thread only takes a *snapshot*, a copy of the
state in host memory (on a GPU that copy is the device-to-host transfer a save needs anyway), and hands
it to one writer thread, which streams it to disk (checkpoint.py) while training goes on. Saves are
written in the order they were submitted, so the pointers move as they would have synchronously. At
most one snapshot waits behind the one being written: a newer `latest` replaces a waiting one.

Failures never stop training: they are kept and handed to the training thread (`failures()`), which
reports them; a full disk is CheckpointDiskFull, and the next save is simply tried again later.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aifactory.train.checkpoint import CheckpointStore


def host_copy(state: Any) -> Any:
    """A deep copy of a (nested) state with every tensor copied to host memory."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: host_copy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [host_copy(value) for value in state]
    if isinstance(state, tuple):
        return tuple(host_copy(value) for value in state)
    return state


@dataclass
class Snapshot:
    weights: dict[str, torch.Tensor]
    meta: dict[str, Any]
    optimizer: dict[str, Any] | None
    pointers: tuple[str, ...]

    @classmethod
    def take(
        cls,
        weights: dict[str, torch.Tensor],
        meta: dict[str, Any],
        optimizer: dict[str, Any] | None,
        pointers: tuple[str, ...],
    ) -> Snapshot:
        return cls(host_copy(weights), dict(meta), host_copy(optimizer), pointers)


class CheckpointWriter:
    """One thread writing snapshots to `store`, in order."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._queue: list[Snapshot] = []
        self._failures: list[tuple[tuple[str, ...], Exception]] = []
        self._written: list[Path] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        with self._cond:
            if snapshot.pointers == ("latest",):
                # A newer latest makes a waiting one pointless (a waiting best is kept: it is another model).
                self._queue = [queued for queued in self._queue if queued.pointers != ("latest",)]
            self._queue.append(snapshot)
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every submitted snapshot is written (or has failed)."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait(0.5)

    def pending(self) -> bool:
        with self._cond:
            return bool(self._queue or self._busy)

    def failures(self) -> list[tuple[tuple[str, ...], Exception]]:
        """(pointers, error) of the saves that failed since the last call, for the training thread."""
        with self._cond:
            failures, self._failures = self._failures, []
            return failures

    def written(self) -> list[Path]:
        """Directories written since the last call."""
        with self._cond:
            written, self._written = self._written, []
            return written

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                snapshot = self._queue.pop(0)
                self._busy = True
            try:
                path = self.store.save(snapshot.weights, snapshot.meta, snapshot.optimizer, snapshot.pointers)
            except Exception as exc:  # reported by the training thread; training goes on
                with self._cond:
                    self._failures.append((snapshot.pointers, exc))
            else:
                with self._cond:
                    self._written.append(path)
            finally:
                del snapshot
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
