"""Checkpoints that survive a SIGKILL at any moment and never load untrusted pickles.

Layout under DATA_DIR/checkpoints:

    step-000001200-3fa1c2/        one checkpoint, immutable once its name loses ".partial"
        model.safetensors         weights (safetensors: no code runs on load)
        optimizer.pt              optimizer state, loaded with torch.load(weights_only=True)
        meta.json                 model config, tokenizer hash, dataset version, step, tokens, losses,
                                  schedule and sampler state, and each file's size and sha256
    latest.json  best.json  backup.json     pointers: {"dir": "step-000001200-3fa1c2", ...}

A save writes a new `*.partial` directory, fsyncs every file and the directory, renames it into place,
and only then moves the pointers, each replaced atomically (temporary file, fsync, rename). A kill at
any point leaves every pointer naming a complete checkpoint. Moving `latest` first points `backup` at
the checkpoint it replaces, so there is always a previous good checkpoint to fall back to, and a failed
cycle rolls back by loading `latest` again (written only when a cycle has ended well).

Loading checks sizes and hashes: a truncated or corrupt file is a CheckpointError that names the file,
never a silent fresh start. Directories no pointer names are deleted after each save.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import safetensors.torch
import torch

WEIGHTS, OPTIMIZER, META = "model.safetensors", "optimizer.pt", "meta.json"
POINTERS = ("latest", "best", "backup")


class CheckpointError(Exception):
    """A checkpoint cannot be written or loaded; the message names the file and the problem."""


@dataclass
class Checkpoint:
    directory: Path
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so readers see the old or the new content, never a mix."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_durably(temporary, data)
    os.replace(temporary, path)
    fsync_dir(path.parent)


class CheckpointStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- one writer ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held by the one trainer writing here (engine or `aifactory train`); a second one is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CheckpointError(
                    f"{self.root} is in use by another trainer ({holder}); stop it first"
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # --- pointers ------------------------------------------------------------------------------------
    def pointer_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def pointer(self, name: str) -> Path | None:
        """The directory `name` (latest, best, backup) points at, or None if there is none yet."""
        path = self.pointer_path(name)
        try:
            target = json.loads(path.read_text())["dir"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is unreadable ({exc}); it should name a checkpoint directory"
            ) from None
        return self.root / target

    def set_pointer(self, name: str, directory: Path, step: int) -> None:
        record = {"dir": directory.name, "step": step, "updated_at": time.time()}
        atomic_write(self.pointer_path(name), json.dumps(record).encode())

    # --- saving --------------------------------------------------------------------------------------
    def save(
        self,
        weights: dict[str, torch.Tensor],
        meta: dict[str, Any],
        optimizer: dict[str, Any] | None,
        pointers: tuple[str, ...] = ("latest",),
    ) -> Path:
        """Write a new checkpoint and point `pointers` at it; returns its directory."""
        step = int(meta["step"])
        final = self.root / f"step-{step:09d}-{secrets.token_hex(3)}"
        partial = final.with_name(final.name + ".partial")
        partial.mkdir(parents=True)
        files: dict[str, dict[str, Any]] = {}
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in weights.items()}
        blobs = {WEIGHTS: safetensors.torch.save(tensors, metadata={"format": "pt"})}
        if optimizer is not None:
            buffer = io.BytesIO()
            torch.save(optimizer, buffer)
            blobs[OPTIMIZER] = buffer.getvalue()
        for name, data in blobs.items():
            write_durably(partial / name, data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        write_durably(partial / META, json.dumps({**meta, "files": files}, indent=2).encode())
        fsync_dir(partial)
        os.rename(partial, final)
        fsync_dir(self.root)
        for name in pointers:
            if name == "latest":
                previous = self.pointer("latest")
                if previous is not None and previous.exists():
                    self.set_pointer("backup", previous, self._step_of(previous))
            self.set_pointer(name, final, step)
        self.collect_garbage()
        return final

    def collect_garbage(self) -> None:
        """Delete checkpoints no pointer names and partial ones left by a kill (the lock holder only)."""
        keep = set()
        for name in POINTERS:
            with contextlib.suppress(CheckpointError):
                target = self.pointer(name)
                if target is not None:
                    keep.add(target.name)
        for path in self.root.glob("step-*"):
            if path.name in keep or path.name.endswith(".corrupt"):
                continue
            shutil.rmtree(path, ignore_errors=True)

    # --- loading -------------------------------------------------------------------------------------
    def load(
        self, name: str, *, map_location: str | torch.device = "cpu", optimizer: bool = True
    ) -> Checkpoint:
        for _ in range(3):
            directory = self.pointer(name)
            if directory is None:
                raise CheckpointError(f"there is no {name} checkpoint in {self.root}")
            try:
                return read_checkpoint(directory, map_location=map_location, optimizer=optimizer)
            except FileNotFoundError as exc:
                if self.pointer(name) != directory:
                    continue  # replaced (and the old one deleted) while we read: read the new one
                raise CheckpointError(f"{exc.filename} is missing from checkpoint {directory}") from None
        raise CheckpointError(f"the {name} checkpoint in {self.root} keeps changing while being read")

    def load_for_resume(self, map_location: str | torch.device = "cpu") -> tuple[Checkpoint | None, str]:
        """The latest checkpoint, or the backup if latest cannot be loaded (then with the error in the
        second value, to be reported as an error). (None, "") when no checkpoint exists yet."""
        if self.pointer("latest") is None:
            if self.pointer("backup") is not None:
                return self._fall_back(f"{self.pointer_path('latest')} is missing", map_location)
            return None, ""
        try:
            return self.load("latest", map_location=map_location), ""
        except CheckpointError as exc:
            return self._fall_back(str(exc), map_location)

    def _fall_back(self, problem: str, map_location: str | torch.device) -> tuple[Checkpoint, str]:
        try:
            checkpoint = self.load("backup", map_location=map_location)
        except CheckpointError as exc:
            raise CheckpointError(f"{problem}; the backup cannot be loaded either: {exc}") from None
        broken = self.pointer("latest")
        if broken is not None and broken.exists() and broken != checkpoint.directory:
            # Kept for inspection, out of the pointers' way; collect_garbage leaves *.corrupt alone.
            broken.rename(broken.with_name(broken.name + ".corrupt"))
        self.set_pointer("latest", checkpoint.directory, int(checkpoint.meta["step"]))
        return checkpoint, f"{problem}; resumed from the backup {checkpoint.directory.name} instead"

    def read_meta(self, name: str) -> tuple[Path, dict[str, Any]] | None:
        """(directory, meta.json) of a pointer without loading weights; None if there is none."""
        directory = self.pointer(name)
        if directory is None:
            return None
        return directory, _read_meta(directory)

    @staticmethod
    def _step_of(directory: Path) -> int:
        return int(directory.name.split("-")[1])


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META
    try:
        meta = json.loads(path.read_text())  # FileNotFoundError propagates: load() retries on it
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}): the checkpoint is corrupt") from None
    if not isinstance(meta, dict) or "files" not in meta or "step" not in meta:
        raise CheckpointError(f"{path} lacks the step or the file list: the checkpoint is corrupt")
    return meta


def _verified_bytes(directory: Path, name: str, meta: dict[str, Any]) -> bytes:
    path = directory / name
    expected = meta["files"].get(name)
    if expected is None:
        raise CheckpointError(f"{directory / META} does not list {name}")
    data = path.read_bytes()
    if len(data) != expected["bytes"]:
        raise CheckpointError(
            f"{path} is truncated or corrupt: {len(data)} bytes, {expected['bytes']} expected"
        )
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its sha256 does not match {directory / META}")
    return data


def read_checkpoint(
    directory: Path, *, map_location: str | torch.device = "cpu", optimizer: bool = True
) -> Checkpoint:
    meta = _read_meta(directory)
    data = _verified_bytes(directory, WEIGHTS, meta)
    try:
        weights = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{directory / WEIGHTS} cannot be read: {exc}") from None
    weights = {name: tensor.to(map_location) for name, tensor in weights.items()}
    state = None
    if optimizer and OPTIMIZER in meta["files"]:
        blob = _verified_bytes(directory, OPTIMIZER, meta)
        try:
            state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(f"{directory / OPTIMIZER} cannot be read: {exc}") from None
    return Checkpoint(directory=directory, meta=meta, weights=weights, optimizer=state)
