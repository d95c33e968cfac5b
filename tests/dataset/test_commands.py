"""`aifactory tokenizer train`, `aifactory dataset build|info` and GET /api/datasets, as people use them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from aifactory.dataset.builder import build
from aifactory.dataset.source import newest_built_generation
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.dataset.helpers import SMALL, add_documents
from tests.processes import env_for


def aifactory(db: Database, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = env_for(DATABASE_URL=db.url, DATA_DIR=data_dir, **{k.upper(): v for k, v in SMALL.items()})
    return subprocess.run(
        [sys.executable, "-m", "aifactory", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_command_line_trains_builds_and_reports(corpus_db: Database, tmp_path: Path) -> None:
    data = tmp_path / "data"
    built = aifactory(corpus_db, data, "dataset", "build")
    assert built.returncode == 1 and "no tokenizer yet" in built.stderr
    trained = aifactory(corpus_db, data, "tokenizer", "train")
    assert trained.returncode == 0, trained.stderr
    assert "tokenizer g1 (bpe, 600 pieces" in trained.stdout and (data / "tokenizer/g0001").is_dir()
    again = aifactory(corpus_db, data, "tokenizer", "train")
    assert again.returncode == 1 and "--new-generation" in again.stderr
    built = aifactory(corpus_db, data, "dataset", "build")
    assert built.returncode == 0, built.stderr
    assert "dataset g1-v1: +120 documents" in built.stdout
    assert "is up to date" in aifactory(corpus_db, data, "dataset", "build").stdout
    info = aifactory(corpus_db, data, "dataset", "info")
    assert "dataset g1-v1: 120 documents" in info.stdout and "version g1-v1: +120 documents" in info.stdout
    as_json = json.loads(aifactory(corpus_db, data, "dataset", "info", "--json").stdout)
    assert as_json["generations"][0]["dataset"]["documents"] == 120
    # A new generation: its own tokenizer; the trainer keeps generation 1 until generation 2 is built.
    second = aifactory(corpus_db, data, "tokenizer", "train", "--new-generation")
    assert second.returncode == 0 and "tokenizer g2" in second.stdout
    assert newest_built_generation(data) == 1
    assert "dataset g2-v1: +120 documents" in aifactory(corpus_db, data, "dataset", "build").stdout
    assert newest_built_generation(data) == 2


def test_the_api_lists_dataset_versions_and_tokenizers(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Any
) -> None:
    build(settings, corpus_db)
    add_documents(corpus_db, range(120, 130), source="wikipedia", domain="ja.wikipedia.org")
    build(settings, corpus_db)
    client = TestClient(create_app(AppContext(settings, corpus_db, node=None)))  # type: ignore[arg-type]
    body = client.get("/api/datasets").json()
    assert [v["tag"] for v in body["versions"]] == ["g1-v2", "g1-v1"]
    newest = body["versions"][0]
    assert newest["new_documents"] == 10 and newest["documents"] == 130
    assert newest["per_source"]["wikipedia"]["documents"] == 10
    assert newest["tokenizer_hash"] == tokenizer.hash
    assert body["tokenizers"][0]["generation"] == 1 and body["tokenizers"][0]["vocab_size"] == 600
    assert [v["tag"] for v in client.get("/api/datasets", params={"limit": 1}).json()["versions"]] == [
        "g1-v2"
    ]
    assert client.get("/api/datasets", params={"limit": 0}).status_code == 422
