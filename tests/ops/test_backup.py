"""Backup while the factory trains, restore into a new place, and the factory carries on from there."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aifactory.cluster import engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.cluster.registry import EngineSpec
from aifactory.cluster.runner import run_engine
from aifactory.dataset.builder import build
from aifactory.dataset.lock import dataset_lock
from aifactory.dataset.shards import generation_dir, load_manifest
from aifactory.dataset.source import open_source
from aifactory.dataset.tokenizer import current
from aifactory.db import Database, migrate
from aifactory.db.schema import documents
from aifactory.ops.backup import BackupError, backup, restore
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir, run_trainer
from tests.conftest import wait_for
from tests.dataset.helpers import SMALL, add_documents, snapshot, trained_tokenizer
from tests.processes import ROOT, env_for
from tests.train.tiny import TINY

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def factory_settings(make_settings: Any, url: str, data_dir: Path) -> Settings:
    return make_settings(database_url=url, data_dir=data_dir, **{**SMALL, **TINY})


def open_db(url: str) -> Database:
    db = Database(url)
    migrate.upgrade(db)
    return db


@contextmanager
def trainer_running(settings: Settings, db: Database) -> Iterator[CheckpointStore]:
    """The trainer engine in a thread, as a node runs it, until the block ends."""
    membership.register(
        db, node_id="n", role="master", hostname=socket.gethostname(), pid=os.getpid(),
        instance_id="test", version="test", api_url="", alive_window=5,
    )  # fmt: skip
    engine_state.ensure(db, "n", ["trainer"])
    stop = threading.Event()
    ctx = EngineContext(settings, db, "n", "trainer", stop)
    spec = EngineSpec("trainer", lambda c: run_trainer(c, open_source, poll_sec=0.05))
    thread = threading.Thread(target=run_engine, args=(ctx, spec), daemon=True)
    thread.start()
    try:
        yield CheckpointStore(checkpoint_dir(settings))
    finally:
        stop.set()
        thread.join(60)


def latest_step(store: CheckpointStore) -> int:
    found = store.read_meta("latest")
    return -1 if found is None else int(found[1]["step"])


def document_rows(db: Database) -> list[tuple]:
    with db.read() as conn:
        query = sa.select(documents.c.id, documents.c.url, documents.c.content_hash).order_by(documents.c.id)
        return [tuple(row) for row in conn.execute(query)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backup_taken_while_training_restores_into_a_new_place_that_trains_on(
    backend: str, new_database: Callable[[str], str], make_settings: Any, tmp_path: Path
) -> None:
    source = factory_settings(make_settings, new_database("source"), tmp_path / "source")
    db = open_db(source.database_url)
    add_documents(db, range(120))
    tokenizer = trained_tokenizer(source, db)
    build(source, db)
    with trainer_running(source, db) as store:
        wait_for(lambda: latest_step(store) >= 10, timeout=120, what="a first checkpoint")
        # More documents and a second build while the trainer goes on writing checkpoints.
        add_documents(db, range(120, 160))
        builder = threading.Thread(target=build, args=(source, db))
        builder.start()
        manifest = backup(source, tmp_path / "backup")
        builder.join(120)
        wait_for(
            lambda: latest_step(store) > manifest["checkpoints"]["latest"], timeout=120, what="a later save"
        )
    documents_then = document_rows(db)
    db.dispose()

    target = factory_settings(make_settings, new_database("target"), tmp_path / "restored")
    restore(target, tmp_path / "backup")
    restored = open_db(target.database_url)
    try:
        assert document_rows(restored) == documents_then  # no document was added after the backup
        assert manifest["database_summary"]["documents"] == len(documents_then)
        assert current(target.data_dir).hash == tokenizer.hash
        tag = manifest["datasets"]["g0001"]["tag"]
        restored_manifest = load_manifest(generation_dir(target.data_dir, 1))
        assert restored_manifest is not None and restored_manifest.tag == tag
        # The dataset is the one the manifest committed: every document's tokens readable and intact.
        tokens = snapshot(target)
        assert len(tokens) == restored_manifest.documents
        restored_store = CheckpointStore(checkpoint_dir(target))
        step = manifest["checkpoints"]["latest"]
        checkpoint, problem = restored_store.load_for_resume()
        assert problem == "" and checkpoint is not None and checkpoint.meta["step"] == step
        assert checkpoint.meta["tokenizer_hash"] == tokenizer.hash
        # Start: the trainer resumes from the restored checkpoint on the restored dataset and goes on.
        with trainer_running(target, restored) as store:
            wait_for(lambda: latest_step(store) > step, timeout=120, what="training after the restore")
        with restored.read() as conn:
            assert conn.execute(sa.text("select count(*) from dataset_versions")).scalar_one() >= 1
    finally:
        restored.dispose()


@pytest.fixture
def small_backup(make_settings: Any, tmp_path: Path) -> tuple[Settings, Path]:
    settings = factory_settings(make_settings, f"sqlite:///{tmp_path / 'source.db'}", tmp_path / "source")
    db = open_db(settings.database_url)
    add_documents(db, range(60))
    trained_tokenizer(settings, db)
    build(settings, db)
    db.dispose()
    backup(settings, tmp_path / "backup")
    return settings, tmp_path / "backup"


def restore_target(make_settings: Any, tmp_path: Path) -> Settings:
    return factory_settings(
        make_settings, f"sqlite:///{tmp_path / 'restored' / 'aifactory.db'}", tmp_path / "restored"
    )


def test_a_damaged_file_is_refused_by_name_and_nothing_is_restored(
    small_backup: tuple[Settings, Path], make_settings: Any, tmp_path: Path
) -> None:
    _, folder = small_backup
    shard = folder / "data" / "dataset" / "g0001" / "shards" / "00000.tokens"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    target = restore_target(make_settings, tmp_path)
    with pytest.raises(BackupError, match=r"00000\.tokens is damaged: its sha256 does not match"):
        restore(target, folder)
    assert not target.data_dir.exists()


def test_a_truncated_file_a_missing_file_and_a_missing_manifest_are_refused(
    small_backup: tuple[Settings, Path], make_settings: Any, tmp_path: Path
) -> None:
    _, folder = small_backup
    target = restore_target(make_settings, tmp_path)
    index = folder / "data" / "dataset" / "g0001" / "index.bin"
    index.write_bytes(index.read_bytes()[:-3])
    with pytest.raises(BackupError, match=r"index\.bin is damaged: \d+ bytes, \d+ expected"):
        restore(target, folder)
    index.unlink()
    with pytest.raises(BackupError, match=r"index\.bin is missing"):
        restore(target, folder)
    (folder / "backup.json").unlink()
    with pytest.raises(BackupError, match=r"backup\.json is missing: .* is not a complete backup"):
        restore(target, folder)
    assert not target.data_dir.exists()


def test_a_manifest_naming_files_outside_the_backup_is_refused(
    small_backup: tuple[Settings, Path], make_settings: Any, tmp_path: Path
) -> None:
    """The manifest is input: a name with `..`, an absolute path or an unknown database file is refused
    before anything is written."""
    _, folder = small_backup
    target = restore_target(make_settings, tmp_path)
    original = json.loads((folder / "backup.json").read_text())
    outside = tmp_path / "outside.txt"
    for name in ("data/../../outside.txt", str(outside)):
        manifest = json.loads(json.dumps(original))
        manifest["files"][name] = {"bytes": 1, "sha256": "0" * 64}
        (folder / "backup.json").write_text(json.dumps(manifest))
        with pytest.raises(BackupError, match="names a file outside the backup"):
            restore(target, folder)
    manifest = json.loads(json.dumps(original))
    manifest["database"]["file"] = "../../outside.txt"
    (folder / "backup.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="unknown database file"):
        restore(target, folder)
    assert not outside.exists() and not target.data_dir.exists()


def test_a_failed_database_load_with_force_leaves_the_old_data_directory(
    small_backup: tuple[Settings, Path], make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aifactory.ops import database_dump

    _, folder = small_backup
    target = restore_target(make_settings, tmp_path)
    target.data_dir.mkdir()
    (target.data_dir / "notes.txt").write_text("mine")

    def failing_load(*args: Any, **kwargs: Any) -> None:
        raise database_dump.DumpError("pg_restore failed: the server went away")

    monkeypatch.setattr(database_dump, "load", failing_load)
    with pytest.raises(BackupError, match="DATA_DIR was left as it was"):
        restore(target, folder, force=True)
    assert [p.name for p in target.data_dir.iterdir()] == ["notes.txt"]


def test_a_non_empty_data_directory_is_refused_without_force(
    small_backup: tuple[Settings, Path], make_settings: Any, tmp_path: Path
) -> None:
    source, folder = small_backup
    with pytest.raises(BackupError, match="is not empty: restore into an empty folder, or --force"):
        restore(source, folder)
    target = restore_target(make_settings, tmp_path)
    target.data_dir.mkdir()
    (target.data_dir / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="is not empty"):
        restore(target, folder)
    manifest = restore(target, folder, force=True)
    assert not (target.data_dir / "notes.txt").exists()
    db = Database(target.database_url)
    assert len(document_rows(db)) == manifest["database_summary"]["documents"] == 60
    db.dispose()
    listed = json.loads((folder / "backup.json").read_text())["files"]
    assert all(len(entry["sha256"]) == 64 and entry["bytes"] >= 0 for entry in listed.values())


def test_the_seed_scripts_back_up_prove_the_backup_and_restore_it(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, _ = small_backup
    node = tmp_path / "node"
    node.mkdir()
    (node / ".env").write_text(f"DATA_DIR={source.data_dir}\nDATABASE_URL={source.database_url}\n")
    tools = env_for(AIFACTORY=str(Path(sys.executable).with_name("aifactory")))

    def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "ops" / name), *args], cwd=node, env={**tools, **env}, capture_output=True, text=True
        )

    made = script("backup_local.sh", str(tmp_path / "nightly"))
    assert made.returncode == 0 and "60 documents" in made.stdout, made.stderr
    proved = script("test_backup_restore.sh")
    assert proved.returncode == 0 and "backup and restore OK" in proved.stdout, proved.stderr
    elsewhere = tmp_path / "elsewhere"
    restored = script("restore_local.sh", str(tmp_path / "nightly"), DATA_DIR=str(elsewhere), DATABASE_URL="")
    assert restored.returncode == 0 and "60 documents, " in restored.stdout, restored.stderr
    assert (elsewhere / "aifactory.db").is_file() and (
        elsewhere / "dataset" / "g0001" / "manifest.json"
    ).is_file()
    refused = script("restore_local.sh", str(tmp_path / "nightly"), DATA_DIR=str(elsewhere), DATABASE_URL="")
    assert refused.returncode == 1 and "is not empty" in refused.stderr


def test_model_versions_are_backed_up_without_work_in_progress_or_stale_staging(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, _ = small_backup
    models = source.data_dir / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "model.safetensors").write_bytes(b"weights")
    (models / "production.json").write_text('{"version": 1, "dir": "v1"}')
    (models / ".v2.partial-4242").mkdir()
    (models / ".v2.partial-4242" / "model.safetensors").write_bytes(b"half")
    stale = source.data_dir / ".backup-staging-999999999"  # a backup killed long ago
    stale.mkdir()
    (source.data_dir / "node_id_master").write_text("master-a-1\n")
    manifest = backup(source, tmp_path / "second")
    assert {"data/models/v1/model.safetensors", "data/models/production.json"} <= set(manifest["files"])
    assert "data/node_id_master" in manifest["files"]
    assert not any(".partial" in name or "staging" in name for name in manifest["files"])
    assert not stale.exists() and not list(source.data_dir.glob(".backup-staging-*"))


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_postgresql_restore_refuses_a_database_with_tables_and_one_of_the_other_kind(
    backend: str, new_database: Callable[[str], str], make_settings: Any, tmp_path: Path
) -> None:
    source = factory_settings(make_settings, new_database("source"), tmp_path / "source")
    db = open_db(source.database_url)
    add_documents(db, range(10))
    db.dispose()
    backup(source, tmp_path / "backup")
    occupied = factory_settings(make_settings, new_database("occupied"), tmp_path / "restored")
    open_db(occupied.database_url).dispose()  # a migrated, so not empty, database
    with pytest.raises(BackupError, match=r"is not empty \(\d+ tables, e\.g\. \w+\): restore into an empty"):
        restore(occupied, tmp_path / "backup")
    assert not occupied.data_dir.exists()  # refused before anything was copied
    sqlite_target = factory_settings(make_settings, "", tmp_path / "lite")
    with pytest.raises(BackupError, match="holds a PostgreSQL database but DATABASE_URL is SQLite"):
        restore(sqlite_target, tmp_path / "backup")
    restore(occupied, tmp_path / "backup", force=True)
    restored = Database(occupied.database_url)
    assert len(document_rows(restored)) == 10
    restored.dispose()


def test_a_backup_waits_for_a_running_build_then_takes_its_last_commit(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, _ = small_backup
    settings = source.model_copy(update={"dataset_lock_wait_sec": 0.3})
    with dataset_lock(settings.data_dir, 0, "a build that runs for long"):
        manifest = backup(settings, tmp_path / "during")
    assert manifest["dataset_state"] == "a build was running: its last commit was taken"
    assert manifest["datasets"]["g0001"]["tag"] == "g1-v1"
    assert backup(settings, tmp_path / "after")["dataset_state"] == "no build was running"
