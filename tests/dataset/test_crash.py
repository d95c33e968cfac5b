"""A build killed half-way (SIGKILL) leaves the previous version loadable; the next build completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from aifactory.dataset.builder import build
from aifactory.dataset.shards import generation_dir, load_manifest, shard_path
from aifactory.dataset.source import ShardSource
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.settings import Settings
from tests.dataset.helpers import add_documents, all_tokens, copy_tokenizer, small_settings, snapshot

ROOT = Path(__file__).resolve().parents[2]


def test_a_killed_build_leaves_the_previous_version_usable(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    build(settings, corpus_db)
    previous = snapshot(settings)
    directory = generation_dir(settings.data_dir, 1)
    committed = load_manifest(directory)
    add_documents(corpus_db, range(120, 240))
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.dataset.crashing_build", corpus_db.url, str(settings.data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        appended = 0
        assert child.stdout is not None
        while appended < 5:
            line = child.stdout.readline()
            assert line, "the build ended before it could be killed"
            assert line.strip() != "finished"
            appended += line.strip() == "appended"
        child.send_signal(signal.SIGKILL)  # in the middle of the build: no cleanup of any kind
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    last = len(committed.shards) - 1
    torn = (
        shard_path(directory, last).stat().st_size > committed.shards[last] * 2
        or shard_path(directory, last + 1).exists()
    )
    assert torn, "the killed build had written past the committed version"
    # The previous version loads and serves windows as if nothing happened.
    assert load_manifest(directory).tag == "g1-v1"
    assert snapshot(settings) == previous
    data = ShardSource(settings, corpus_db, 1)
    assert data.train_batch(4, 32, torch.Generator().manual_seed(0)).shape == (4, 33)
    # The next build cuts the torn tail off and ends where a build from scratch would.
    report = build(settings, corpus_db)
    assert report.tag == "g1-v2" and report.new_documents == 120
    fresh = small_settings(make_settings, corpus_db, data_dir=tmp_path / "scratch")
    copy_tokenizer(settings, fresh)
    build(fresh, corpus_db)
    assert all_tokens(settings) == all_tokens(fresh) and snapshot(settings) == snapshot(fresh)
