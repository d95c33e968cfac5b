"""`aifactory backup` and `aifactory restore` against a plain `cp -r` of the same data directory.

A data directory of about 1 GB (token shards, two checkpoints with their pointers, a tokenizer and a
SQLite database) is built under /tmp. Then, alternating so both see the same page cache:

  backup   ops.backup.backup (SQLite online backup; shards copied with their sha256 computed on the
           way, the committed part of each; checkpoint files frozen by hard links and copied by the
           kernel with the sha256 their meta.json records)
  restore  ops.backup.restore into an empty DATA_DIR (every file's size and sha256 checked)
  vs.      `cp -r` of the data directory, and of the backup folder (no hashes, no fsync: its data is
           still in the page cache when it returns; a backup fsyncs every file it writes)

Aim: backup and restore within 1.3x of the copy. Every byte is hashed (sha256) on the way in and checked
on the way out, so one sha256 pass over the data, printed beside, is the floor on a slow CPU. Everything
is removed at the end.

    python benchmarks/backup.py [--gigabytes 1.0] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from aifactory.dataset.shards import INDEX_DTYPE, Manifest
from aifactory.db import Database, migrate
from aifactory.ops.backup import backup, restore
from aifactory.settings import Settings

SHARD_TOKENS = 16 << 20  # 32 MB shards of uint16 tokens


def build_data_dir(root: Path, gigabytes: float) -> Settings:
    """Shards (60%) and two checkpoints (40%) of random bytes, laid out as the factory writes them."""
    data = root / "data"
    settings = Settings(_env_file=None, data_dir=data, database_url="")
    db = Database(settings.resolved_database_url())
    migrate.upgrade(db)
    db.dispose()
    rng = np.random.default_rng(0)
    total = int(gigabytes * (1 << 30))
    generation = data / "dataset" / "g0001"
    (generation / "shards").mkdir(parents=True)
    shards = []
    remaining = int(total * 0.6) // 2
    while remaining > 0:
        tokens = min(SHARD_TOKENS, remaining)
        rng.integers(0, 600, tokens, dtype=np.uint16).tofile(
            generation / "shards" / f"{len(shards):05d}.tokens"
        )
        shards.append(tokens)
        remaining -= tokens
    documents = sum(shards) // 1000
    np.zeros(documents, INDEX_DTYPE).tofile(generation / "index.bin")
    (generation / "domains.txt").write_text("example.com\n")
    manifest = Manifest(
        generation=1, tokenizer_hash="t" * 64, vocab_size=600, dtype="uint16", languages=["en"],
        val_fraction=0.1, val_max_tokens=1_000_000, version=3, shards=shards, documents=documents,
        domains_bytes=len("example.com\n"),
    )  # fmt: skip
    (generation / "manifest.json").write_text(json.dumps(asdict(manifest)))
    tokenizer = data / "tokenizer" / "g0001"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.model").write_bytes(rng.bytes(300_000))
    (tokenizer / "tokenizer.json").write_text(json.dumps({"tokenizer_hash": "t" * 64, "generation": 1}))
    checkpoints = data / "checkpoints"
    for number, name in enumerate(("latest", "backup")):
        folder = checkpoints / f"step-{number:09d}-abcdef"
        folder.mkdir(parents=True)
        digest, size = hashlib.sha256(), int(total * 0.2)
        with open(folder / "model.safetensors", "wb") as file:
            left = size
            while left > 0:
                chunk = rng.bytes(min(left, 64 << 20))
                digest.update(chunk)
                file.write(chunk)
                left -= len(chunk)
        files = {"model.safetensors": {"bytes": size, "sha256": digest.hexdigest()}}  # as the trainer writes
        (folder / "meta.json").write_text(json.dumps({"step": number, "files": files}))
        (checkpoints / f"{name}.json").write_text(json.dumps({"dir": folder.name, "step": number}))
    return settings


def hash_all(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                hashlib.file_digest(file, "sha256")


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(work: Callable[..., object] | list[str], *args: object) -> float:
    """Seconds of `work(*args)`, or of the command `work` when it is a list."""
    started = time.perf_counter()
    if isinstance(work, list):
        subprocess.run(work, check=True)
    else:
        work(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aifactory-bench-backup-", dir="/tmp"))
    try:
        settings = build_data_dir(root, args.gigabytes)
        print(f"data directory: {size_of(settings.data_dir) / (1 << 30):.2f} GB in {settings.data_dir}")
        results: dict[str, list[float]] = {
            "backup": [], "cp_data": [], "restore": [], "cp_backup": [], "sha256": []
        }  # fmt: skip
        for round_number in range(args.rounds):
            folder, copy = root / f"backup-{round_number}", root / f"copy-{round_number}"
            target = settings.model_copy(update={"data_dir": root / f"restored-{round_number}"})
            # os.sync() between the steps, untimed: otherwise a step's fsyncs would write back the dirty
            # pages the step before left (ext4 commits them together), and pay for the copy's writes.
            results["cp_data"].append(timed(["cp", "-r", str(settings.data_dir), str(copy)]))
            os.sync()
            results["sha256"].append(timed(hash_all, settings.data_dir))
            results["backup"].append(timed(backup, settings, folder))
            shutil.rmtree(copy)
            os.sync()
            results["cp_backup"].append(timed(["cp", "-r", str(folder), str(copy)]))
            os.sync()
            results["restore"].append(timed(restore, target, folder))
            for path in (copy, folder, target.data_dir):
                shutil.rmtree(path)
            os.sync()
        best = {name: min(values) for name, values in results.items()}
        print(f"{'':10} {'aifactory':>10} {'cp -r':>10} {'ratio':>7}")
        for name, reference in (("backup", "cp_data"), ("restore", "cp_backup")):
            ratio = best[name] / best[reference]
            print(f"{name:10} {best[name]:9.2f}s {best[reference]:9.2f}s {ratio:6.2f}x")
        # What no verified backup can beat: one sha256 pass over the bytes, on this machine, now.
        print(
            f"(sha256 of the same bytes alone: {best['sha256']:.2f}s, "
            f"{best['sha256'] / best['cp_data']:.2f}x cp -r)"
        )
        print(f"RESULT backup_vs_copy_ratio {best['backup'] / best['cp_data']:.2f}")
        print(f"RESULT restore_vs_copy_ratio {best['restore'] / best['cp_backup']:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
