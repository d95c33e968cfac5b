"""`aifactory update model` end to end: a model trained elsewhere, published with a version.json, is
downloaded, registered, promoted and answers on a fresh node; a wrong hash registers nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aifactory.dataset.builder import build
from aifactory.db import Database
from aifactory.registry import pointer, versions
from aifactory.train.engine import checkpoint_dir
from tests.conftest import wait_for
from tests.dataset.helpers import add_documents, trained_tokenizer
from tests.ops.test_backup import factory_settings, latest_step, open_db, trainer_running
from tests.ops.test_update import sha256
from tests.processes import aifactory


def publish_trained_model(root: Path, make_settings: Any, tmp_path: Path) -> None:
    """Train a tiny model on another factory and publish its files with a version.json."""
    source = factory_settings(make_settings, f"sqlite:///{tmp_path / 'publisher.db'}", tmp_path / "publisher")
    db = open_db(source.database_url)
    add_documents(db, range(60))
    tokenizer = trained_tokenizer(source, db)
    build(source, db)
    with trainer_running(source, db) as store:
        wait_for(lambda: latest_step(store) >= 5, timeout=120, what="a checkpoint to publish")
    db.dispose()
    latest = store.pointer("latest")
    assert latest is not None
    release = root / "models" / "r7"
    release.mkdir(parents=True)
    sources = {
        "model.safetensors": latest / "model.safetensors",
        "meta.json": latest / "meta.json",
        "tokenizer.model": tokenizer.directory / "tokenizer.model",
        "tokenizer.json": tokenizer.directory / "tokenizer.json",
    }
    files = {}
    for name, path in sources.items():
        (release / name).write_bytes(path.read_bytes())
        files[name] = {"url": f"models/r7/{name}", "sha256": sha256(release / name)}
    (root / "version.json").write_text(
        json.dumps({"app_version": "0.1.0", "model": {"version": "r7", "files": files}})
    )
    assert checkpoint_dir(source).is_dir()


def test_a_published_model_is_registered_promoted_and_answers_on_a_fresh_node(
    server: tuple[str, Path],
    make_settings: Any,
    tmp_path: Path,
) -> None:
    url, root = server
    publish_trained_model(root, make_settings, tmp_path)
    node = {"DATA_DIR": tmp_path / "fresh", "DATABASE_URL": ""}
    run = aifactory(
        "update", "model", "--from", f"{url}/version.json", "--promote", cwd=tmp_path, timeout=120, **node
    )
    assert run.returncode == 0, run.stderr
    assert (
        "model r7 from" in run.stdout
        and "registered as v1" in run.stdout
        and "v1 is production" in run.stdout
    )
    fresh = make_settings(data_dir=tmp_path / "fresh")
    assert pointer.read(fresh)["version"] == 1
    db = Database(fresh.resolved_database_url())
    try:
        [row] = versions.list_versions(db)
        assert (
            row["origin"] == "update" and row["checkpoint"] == "r7" and versions.state(db)["production"] == 1
        )
    finally:
        db.dispose()
    answer = aifactory(
        "generate", "the model", "--model", "production", "--max-tokens", "5", "--json", "--no-rag",
        cwd=tmp_path, timeout=180, **node,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["usage"]["completion_tokens"] >= 1
    # The same release again is the same version (same weights), not a second one.
    again = aifactory("update", "model", "--from", f"{url}/version.json", cwd=tmp_path, timeout=120, **node)
    assert again.returncode == 0 and "registered as v1" in again.stdout


def test_a_wrong_hash_registers_nothing(
    server: tuple[str, Path],
    make_settings: Any,
    tmp_path: Path,
) -> None:
    url, root = server
    publish_trained_model(root, make_settings, tmp_path)
    data = json.loads((root / "version.json").read_text())
    data["model"]["files"]["tokenizer.model"]["sha256"] = "f" * 64
    (root / "version.json").write_text(json.dumps(data))
    node = {"DATA_DIR": tmp_path / "fresh", "DATABASE_URL": ""}
    run = aifactory("update", "model", "--from", f"{url}/version.json", "--promote", cwd=tmp_path, **node)
    assert run.returncode == 1 and "tokenizer.model from" in run.stderr and "does not match" in run.stderr
    fresh = make_settings(data_dir=tmp_path / "fresh")
    assert pointer.read(fresh) is None and not (tmp_path / "fresh" / "tokenizer").exists()
    db = Database(fresh.resolved_database_url())
    try:
        assert versions.list_versions(db) == []
    finally:
        db.dispose()
