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
never a silent fresh start; with both pointers lost, the newest loadable step-* directory is resumed.
After each save the KEEP_SNAPSHOTS newest checkpoints no pointer names are kept, older ones, partial
ones and all but the newest `.corrupt` one are deleted. Lack of space is CheckpointDiskFull: nothing
changed, the caller keeps training and retries later.
"""

from __future__ import annotations

import contextlib
import errno
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

from aifactory.locks import LockHeld, file_lock

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


class CheckpointDiskFull(CheckpointError):
    """Not enough space for a save; nothing was changed (the message says how much is free and needed)."""


def disk_full_message(free: int, need: int, where: Path) -> str:
    return f"disk full: {free / 1e9:.2f} GB free, checkpoint needs {need / 1e9:.2f} GB ({where})"


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state: what a save writes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(value) for value in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(value) for value in state)
    return 0


class HashingWriter:
    """A file-like that writes through to `handle` and keeps the size and sha256 of what it wrote."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.sha256, self.size = handle, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.handle.write(view)
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self.handle.flush()

    def record(self) -> dict[str, Any]:
        return {"bytes": self.size, "sha256": self.sha256.hexdigest()}


SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Stream `tensors` into a safetensors file (the format's header, then each tensor's bytes in
    turn), fsynced; returns its size and sha256. Only one tensor's bytes are ever copied at a time."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as handle:
        out = HashingWriter(handle)
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for tensor in tensors.values():
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            if flat.numel():
                out.write(flat.view(torch.uint8).numpy())
        handle.flush()
        os.fsync(handle.fileno())
    return out.record()


class CheckpointStore:
    def __init__(self, root: Path, keep_snapshots: int = 2) -> None:
        self.root = Path(root)
        self.keep_snapshots = keep_snapshots  # older checkpoints kept besides latest, best and backup

    # --- one writer ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held by the one trainer writing here (engine or `aifactory train`); a second one is refused."""
        try:
            with file_lock(self.root / ".lock", f"pid {os.getpid()}"):
                yield
        except LockHeld as held:
            raise CheckpointError(
                f"{self.root} is in use by another trainer ({held.holder}); stop it first"
            ) from None

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
        """Write a new checkpoint and point `pointers` at it; returns its directory.

        The files are streamed to disk tensor by tensor (hashed on the way), so a save needs no second
        copy of the state in memory. Too little space is a CheckpointDiskFull before anything is
        written; running out during the write removes the partial directory and raises it too: the
        pointers still name the previous checkpoint, and the caller retries later."""
        step = int(meta["step"])
        need = state_bytes(weights) + (state_bytes(optimizer) if optimizer is not None else 0) + (1 << 20)
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise CheckpointDiskFull(disk_full_message(free, need, self.root))
        final = self.root / f"step-{step:09d}-{secrets.token_hex(3)}"
        partial = final.with_name(final.name + ".partial")
        partial.mkdir()
        try:
            files = {WEIGHTS: write_safetensors(partial / WEIGHTS, weights)}
            if optimizer is not None:
                with open(partial / OPTIMIZER, "wb") as handle:
                    hashing = HashingWriter(handle)
                    torch.save(optimizer, hashing)
                    handle.flush()
                    os.fsync(handle.fileno())
                files[OPTIMIZER] = hashing.record()
            write_durably(partial / META, json.dumps({**meta, "files": files}, indent=2).encode())
            fsync_dir(partial)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                free = shutil.disk_usage(self.root).free
                raise CheckpointDiskFull(disk_full_message(free, need, self.root)) from None
            raise
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
        """Keep what the pointers name and the KEEP_SNAPSHOTS newest other checkpoints (more to fall
        back to); delete partial ones left by a kill and all but the newest `.corrupt` one (kept for
        inspection). Only the lock holder calls this."""
        keep = set()
        for name in POINTERS:
            with contextlib.suppress(CheckpointError):
                target = self.pointer(name)
                if target is not None:
                    keep.add(target.name)
        complete = [path for path in self.step_dirs() if path.name not in keep]
        for path in complete[self.keep_snapshots :]:
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob("step-*.partial"):
            shutil.rmtree(path, ignore_errors=True)
        corrupt = sorted(self.root.glob("step-*.corrupt"), key=lambda p: p.name, reverse=True)
        for path in corrupt[1:]:
            shutil.rmtree(path, ignore_errors=True)

    def step_dirs(self) -> list[Path]:
        """Complete checkpoint directories, newest step first."""
        found = [
            path
            for path in self.root.glob("step-*")
            if path.is_dir() and not path.name.endswith((".partial", ".corrupt"))
        ]
        return sorted(found, key=lambda p: (self._step_of(p), p.stat().st_mtime), reverse=True)

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
        second value, to be reported as an error). (None, "") only when no checkpoint directory exists:
        with both pointers lost, the newest loadable step-* directory is resumed and `latest` rebuilt,
        so a lost pointer never starts a fresh model whose first save would delete the old ones."""
        if self.pointer("latest") is None:
            if self.pointer("backup") is not None:
                return self._fall_back(f"{self.pointer_path('latest')} is missing", map_location)
            if not self.step_dirs():
                return None, ""
            return self._rebuild(f"{self.pointer_path('latest')} and its backup are missing", map_location)
        try:
            return self.load("latest", map_location=map_location), ""
        except CheckpointError as exc:
            return self._fall_back(str(exc), map_location)

    def _rebuild(
        self, problem: str, map_location: str | torch.device, broken: frozenset[Path] = frozenset()
    ) -> tuple[Checkpoint, str]:
        """Resume from the newest step-* directory that loads, and point `latest` at it; the `broken`
        ones are then renamed *.corrupt, out of the pointers' way. Raises, changing nothing, if none
        loads: a new model must never be started over checkpoints that exist."""
        errors = []
        for directory in self.step_dirs():
            if directory in broken:
                continue
            try:
                checkpoint = read_checkpoint(directory, map_location=map_location)
            except (CheckpointError, FileNotFoundError) as exc:
                errors.append(f"{directory.name}: {exc}")
                continue
            self.set_pointer("latest", directory, int(checkpoint.meta["step"]))
            for path in broken:
                if path.exists():
                    path.rename(path.with_name(path.name + ".corrupt"))
            return checkpoint, f"{problem}; rebuilt the pointer from {directory.name}, the newest loadable"
        raise CheckpointError(
            f"{problem}; no other checkpoint directory in {self.root} loads either "
            f"({'; '.join(errors) or 'there is none'}): refusing to start a new model over them "
            "(move them away to start one)"
        )

    def _fall_back(self, problem: str, map_location: str | torch.device) -> tuple[Checkpoint, str]:
        try:
            checkpoint = self.load("backup", map_location=map_location)
        except CheckpointError as exc:
            broken = frozenset(p for p in (self.pointer("latest"), self.pointer("backup")) if p is not None)
            detail = f"{problem}; the backup cannot be loaded either: {exc}"
            return self._rebuild(detail, map_location, broken)
        broken = self.pointer("latest")
        if broken is not None and broken.exists() and broken != checkpoint.directory:
            # Kept for inspection, out of the pointers way (collect_garbage keeps the newest *.corrupt).
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
