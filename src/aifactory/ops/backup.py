"""`aifactory backup` and `aifactory restore`: a consistent snapshot of a running factory, and its return.

A backup is a folder:

    backup.json            what is inside: every file's size and sha256, and a summary (documents,
                           dataset versions, tokenizers, checkpoint steps) written last: its presence
                           marks a complete backup
    database.sqlite        the SQLite online backup, or database.pgdump (pg_dump --format=custom)
    data/tokenizer/g0001/  tokenizer generations (immutable once written)
    data/dataset/g0001/    manifest.json and the committed part of shards, index.bin and domains.txt
    data/checkpoints/      latest.json, best.json, backup.json and the checkpoint folders they name
    data/models/           registered model versions (production.json and v<N>/)
    data/node_id_master    the node's identity (the restored node is the same node)

Consistency without stopping anything. The backup waits for a running dataset build like a second
builder would (the dataset lock, up to DATASET_LOCK_WAIT_SEC) and, while it holds the lock, reads the
dataset manifests and the checkpoint pointers and pins the database's state; then it lets builds go on
and copies. A build that runs longer than that is not waited for: the builder appends to its files and
commits by replacing manifest.json, so the backup copies exactly the bytes the manifest it read covers,
never a half-written build (its new version is then built again after a restore). Checkpoints are
immutable folders published by moving a pointer; the backup reads the pointers and at once hard-links the
files they name into a staging folder, so a save (and its clean-up of old folders) during the copy
changes nothing that is being copied (the trainer's background writer publishes a checkpoint the same
way: folder first, pointer last). Both are captured *before* the database is pinned, so the database
holds every document a dataset manifest or checkpoint refers to.

A restore copies into a staging folder beside the data directory, checking every size and hash on the
way, and only then moves it into place: a damaged backup is refused, with the file named, before
anything is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory import __version__
from aifactory.autotune import cpu_cores
from aifactory.cluster.membership import process_alive
from aifactory.dataset import DatasetError
from aifactory.dataset.lock import dataset_lock
from aifactory.dataset.shards import INDEX_DTYPE, Manifest, dataset_root, shard_path
from aifactory.dataset.tokenizer import tokenizer_root
from aifactory.db.database import sqlite_path
from aifactory.ops import database_dump
from aifactory.settings import Settings

MANIFEST = "backup.json"
FORMAT = 1
CHUNK = 4 << 20
POINTERS = ("latest", "best", "backup")  # train.checkpoint's pointer files (that module imports torch)


class BackupError(Exception):
    """A backup cannot be taken or restored; the message names the file or setting at fault."""


@dataclass
class Item:
    """One file of the backup: where it comes from, and how many of its bytes belong to the snapshot."""

    relative: str  # under data/ in the backup, and under DATA_DIR when restored
    source: Path
    limit: int | None = None  # the committed length (dataset files); None = the whole file
    known: tuple[int, str] | None = None  # (bytes, sha256) its writer recorded (checkpoint files)


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


# --- copying with hashes ---------------------------------------------------------------------------------
def copy_hashed(source: Path, target: Path, limit: int | None = None) -> tuple[int, str]:
    """Copy the first `limit` bytes (all when None) of `source` to `target`; (bytes, sha256)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    target.parent.mkdir(parents=True, exist_ok=True)
    if limit == 0:  # committed as empty (a dataset with no documents yet): the file may not exist
        target.write_bytes(b"")
        return 0, digest.hexdigest()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while limit is None or size < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - size)
            got = src.readinto(view[:want])
            if not got:
                break
            digest.update(view[:got])  # hashlib and file writes release the GIL: threads overlap
            dst.write(view[:got])
            size += got
        dst.flush()
        os.fsync(dst.fileno())
    if limit is not None and size != limit:
        raise BackupError(
            f"{source} has {size} bytes but its manifest commits {limit}: the dataset is damaged"
        )
    return size, digest.hexdigest()


def copy_known(source: Path, target: Path, known: tuple[int, str]) -> tuple[int, str]:
    """Copy a file whose size and sha256 its writer recorded (a checkpoint's meta.json): the kernel
    copies it (no pass through Python) and the recorded hash goes into the manifest, so a file damaged
    since it was written is caught by the restore, which checks every byte."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())
    size = target.stat().st_size
    if size != known[0]:
        raise BackupError(
            f"{source} has {size} bytes, its meta.json says {known[0]}: the checkpoint is damaged"
        )
    return known


def parallel(jobs: list[Any], work: Any) -> list[Any]:
    """`work(job)` for every job on a few threads (copies are I/O and hashing, both outside the GIL)."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(4, cpu_cores(), len(jobs)))) as pool:
        return list(pool.map(work, jobs))


# --- what a backup holds ---------------------------------------------------------------------------------
def dataset_items(data_dir: Path, staging: Path) -> tuple[list[Item], dict[str, Any]]:
    """Each generation's manifest as it is now (kept in `staging`: a build may replace it while we copy)
    and the prefix of its files that this manifest commits."""
    items, versions = [], {}
    root = dataset_root(data_dir)
    for directory in sorted(root.glob("g[0-9]*")) if root.is_dir() else []:
        manifest_path = directory / "manifest.json"
        try:
            snapshot = manifest_path.read_bytes()  # the commit point, as it is now
        except FileNotFoundError:
            continue  # a generation whose first build has not committed yet
        manifest = Manifest(**json.loads(snapshot))
        relative = f"dataset/{directory.name}"
        frozen = staging / relative / "manifest.json"
        frozen.parent.mkdir(parents=True, exist_ok=True)
        frozen.write_bytes(snapshot)
        items.append(Item(f"{relative}/manifest.json", frozen))
        itemsize = manifest.token_dtype.itemsize
        for number, tokens in enumerate(manifest.shards):
            path = shard_path(directory, number)
            items.append(Item(f"{relative}/shards/{path.name}", path, tokens * itemsize))
        items.append(
            Item(f"{relative}/index.bin", directory / "index.bin", manifest.documents * INDEX_DTYPE.itemsize)
        )
        items.append(Item(f"{relative}/domains.txt", directory / "domains.txt", manifest.domains_bytes))
        versions[directory.name] = {"tag": manifest.tag, "documents": manifest.documents}
    return items, versions


def tokenizer_items(data_dir: Path) -> tuple[list[Item], dict[str, str]]:
    items, hashes = [], {}
    root = tokenizer_root(data_dir)
    for directory in sorted(root.glob("g[0-9]*")) if root.is_dir() else []:
        info = directory / "tokenizer.json"
        if not directory.name[1:].isdigit() or not info.is_file():
            continue  # a generation being trained is a hidden staging folder until it is complete
        hashes[directory.name] = json.loads(info.read_text())["tokenizer_hash"]
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            items.append(Item(f"tokenizer/{path.relative_to(root).as_posix()}", path))
    return items, hashes


def recorded_hashes(directory: Path) -> dict[str, tuple[int, str]]:
    """The sizes and hashes a checkpoint's meta.json records for its files ({} if none)."""
    try:
        files = json.loads((directory / "meta.json").read_text()).get("files", {})
        return {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def frozen_tree(directory: Path, relative: str, staging: Path) -> list[Item]:
    """Hard links to every file under `directory` in `staging`: the files stay what they are now even if
    the folder is deleted meanwhile (checkpoint clean-up). Falls back to the files themselves where
    links are impossible (another file system)."""
    items = []
    known = recorded_hashes(directory)
    # Hidden entries are work in progress (a registration's .vN.partial, a download): not part of it.
    files = (
        p
        for p in directory.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    for path in sorted(p for p in files if p.is_file()):
        name = f"{relative}/{path.relative_to(directory).as_posix()}"
        link = staging / name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, link)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            link = path
        items.append(Item(name, link, known=known.get(path.relative_to(directory).as_posix())))
    return items


def checkpoint_items(data_dir: Path, staging: Path) -> tuple[list[Item], dict[str, int]]:
    """The pointers and the folders they name, frozen; retried when a save moves them meanwhile."""
    root = data_dir / "checkpoints"
    for _ in range(5):
        items: list[Item] = []
        steps: dict[str, int] = {}
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        try:
            for name in POINTERS:
                pointer = root / f"{name}.json"
                try:
                    data = pointer.read_bytes()
                except FileNotFoundError:
                    continue
                record = json.loads(data)
                folder = root / record["dir"]
                if not (folder / "meta.json").is_file():
                    raise FileNotFoundError(folder)
                frozen_pointer = staging / "checkpoints" / f"{name}.json"
                frozen_pointer.parent.mkdir(parents=True, exist_ok=True)
                frozen_pointer.write_bytes(data)
                items.append(Item(f"checkpoints/{name}.json", frozen_pointer))
                if not any(i.relative.startswith(f"checkpoints/{folder.name}/") for i in items):
                    items += frozen_tree(folder, f"checkpoints/{folder.name}", staging)
                steps[name] = int(record["step"])
            return items, steps
        except FileNotFoundError:
            time.sleep(0.1)  # a save replaced a pointer and deleted its old folder while we read: again
    raise BackupError(f"the checkpoints in {root} keep changing while being read; try again")


def plan(settings: Settings, staging: Path) -> Plan:
    data_dir = Path(settings.data_dir)
    result = Plan()
    dataset, versions = dataset_items(data_dir, staging)
    tokenizers, hashes = tokenizer_items(data_dir)
    checkpoints, steps = checkpoint_items(data_dir, staging)
    models = data_dir / "models"
    registered = frozen_tree(models, "models", staging) if models.is_dir() else []
    # The node's identity: the restored node is the same node, and resumes what it was asked to run.
    identity = [Item(path.name, path) for path in sorted(data_dir.glob("node_id_*")) if path.is_file()]
    result.items = tokenizers + dataset + checkpoints + registered + identity
    result.summary = {"datasets": versions, "tokenizers": hashes, "checkpoints": steps}
    return result


# --- backup ---------------------------------------------------------------------------------------------
def default_directory() -> Path:
    return Path("backups") / time.strftime("backup_%Y%m%d_%H%M%S")


def remove_stale_staging(data_dir: Path) -> None:
    """The staging folders of backups that were killed (their links would keep old checkpoints alive)."""
    for path in data_dir.glob(".backup-staging-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid), None):
            shutil.rmtree(path, ignore_errors=True)


def backup(settings: Settings, target: Path) -> dict[str, Any]:
    """Write a backup of this factory into `target` (which must not exist); returns its manifest."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} exists and is not empty: give a new folder")
    data_dir = Path(settings.data_dir)
    url = settings.resolved_database_url()
    database_file = sqlite_path(url)
    if database_file is not None and not database_file.is_file():
        raise BackupError(f"the database {database_file} does not exist: nothing to back up (DATA_DIR?)")
    data_dir.mkdir(parents=True, exist_ok=True)  # a node that has written no file yet (PostgreSQL)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    remove_stale_staging(data_dir)
    staging = data_dir / f".backup-staging-{os.getpid()}"
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as database:
            with contextlib.ExitStack() as lock:
                # While no dataset build runs, the dataset files and the database agree exactly: wait
                # for a running build like a second builder does; if it runs longer, snapshot what it
                # has committed (consistent too; its version is then built again after a restore).
                try:
                    lock.enter_context(
                        dataset_lock(
                            data_dir, settings.dataset_lock_wait_sec, f"aifactory backup, pid {os.getpid()}"
                        )
                    )
                    dataset_state = "no build was running"
                except DatasetError:
                    dataset_state = "a build was running: its last commit was taken"
                snapshot = plan(settings, staging)  # the files' commit points first...
                pin = database.enter_context(database_dump.pinned(url))  # ...then the database
            # The dataset lock is released here: builds go on while the copy runs.
            dump_file, summary = pin.write(partial), pin.summary
        files: dict[str, dict[str, Any]] = {}

        def copy(item: Item) -> tuple[str, int, str]:
            target = partial / "data" / item.relative
            if item.known is not None:
                return item.relative, *copy_known(item.source, target, item.known)
            return item.relative, *copy_hashed(item.source, target, item.limit)

        for relative, size, digest in parallel(snapshot.items, copy):
            files[f"data/{relative}"] = {"bytes": size, "sha256": digest}
        size, digest = _hash_file(dump_file)
        files[dump_file.name] = {"bytes": size, "sha256": digest}
    except database_dump.DumpError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(str(exc)) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "app_version": __version__,
        "created_at": time.time(),
        "host": socket.gethostname(),
        "database": {"backend": "sqlite" if sqlite_path(url) else "postgresql", "file": dump_file.name},
        "database_summary": summary,
        "dataset_state": dataset_state,
        **snapshot.summary,
        "seconds": round(time.monotonic() - started, 3),
        "files": files,
    }
    _write_json(partial / MANIFEST, manifest)
    if target.exists():
        target.rmdir()
    os.replace(partial, target)
    return manifest


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as file:
        json.dump(data, file, indent=1)
        file.flush()
        os.fsync(file.fileno())


# --- restore --------------------------------------------------------------------------------------------
def read_manifest(source: Path) -> dict[str, Any]:
    path = Path(source) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path} is missing: {source} is not a complete backup") from None
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON ({exc}): the backup is damaged") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{path} has format {manifest.get('format')!r}; this version reads {FORMAT}")
    return manifest


def verified_copy(source: Path, relative: str, expected: dict[str, Any], target: Path) -> None:
    """Copy one backup file, refusing it (named) if its size or sha256 is not what the manifest says."""
    path = source / relative
    if not path.is_file():
        raise BackupError(f"backup file {path} is missing")
    size, digest = copy_hashed(path, target)
    if size != expected["bytes"]:
        raise BackupError(f"backup file {path} is damaged: {size} bytes, {expected['bytes']} expected")
    if digest != expected["sha256"]:
        raise BackupError(f"backup file {path} is damaged: its sha256 does not match {MANIFEST}")


def _safe_name(source: Path, name: str) -> str:
    """A manifest's file name, refused when it would reach outside the backup (the manifest is input)."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"{source / MANIFEST} names a file outside the backup: {name!r}")
    return name


def _empty(directory: Path) -> bool:
    return not directory.exists() or not any(directory.iterdir())


@contextlib.contextmanager
def _staging_beside(data_dir: Path) -> Iterator[Path]:
    staging = data_dir.with_name(f".{data_dir.name}.restore-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restore(settings: Settings, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Restore the backup in `source` into DATA_DIR and DATABASE_URL (both empty unless `force`)."""
    source = Path(source)
    manifest = read_manifest(source)
    data_dir = Path(settings.data_dir).absolute()
    url = settings.resolved_database_url()
    if not _empty(data_dir) and not force:
        raise BackupError(
            f"DATA_DIR {data_dir} is not empty: restore into an empty folder, or --force to replace it"
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    for name in files:
        _safe_name(source, name)
    dump_name = manifest["database"]["file"]
    if dump_name not in (database_dump.SQLITE_FILE, database_dump.POSTGRES_FILE):
        raise BackupError(f"{source / MANIFEST} names an unknown database file {dump_name!r}")
    if dump_name not in files:
        raise BackupError(f"{source / MANIFEST} does not list the database file {dump_name}")
    database_file = sqlite_path(url)
    inside = database_file is not None and database_file.resolve().parent == data_dir.resolve()
    try:
        # A database outside DATA_DIR is checked now, before anything is copied or replaced.
        database_dump.check_target(url, dump_name, force=force or inside)
    except database_dump.DumpError as exc:
        raise BackupError(str(exc)) from None
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staging_beside(data_dir) as staging:
        # Every file is checked before anything is replaced.
        jobs = [(name, meta) for name, meta in files.items() if name.startswith("data/")]
        parallel(jobs, lambda job: verified_copy(source, job[0], job[1], staging / job[0]))
        dump_copy = staging / dump_name
        verified_copy(source, dump_name, files[dump_name], dump_copy)
        (staging / "data").mkdir(exist_ok=True)
        # The old DATA_DIR (empty, or --force) is kept aside until the database is loaded: a load that
        # fails puts it back, so files and database never come from two different states.
        previous = staging / "previous"
        if data_dir.exists():
            os.replace(data_dir, previous)
        os.replace(staging / "data", data_dir)
        try:
            database_dump.load(url, dump_copy, force=force or inside)
        except (database_dump.DumpError, OSError) as exc:
            shutil.rmtree(data_dir, ignore_errors=True)
            if previous.exists():
                os.replace(previous, data_dir)
            raise BackupError(f"{exc}; DATA_DIR was left as it was") from None
    return manifest
