"""The dataset lock: two builders never write the same shards at once; the second waits or refuses."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from aifactory.dataset import DatasetError
from aifactory.dataset.builder import build
from aifactory.dataset.lock import dataset_lock
from aifactory.dataset.shards import generation_dir, load_manifest
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.settings import Settings
from tests.dataset.helpers import add_documents, copy_tokenizer, small_settings, snapshot


def test_a_second_builder_refuses_naming_the_holder_after_waiting(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    with dataset_lock(settings.data_dir, 0, "aifactory dataset build, pid 4242 on box"):
        refused = settings.model_copy(update={"dataset_lock_wait_sec": 0.3})
        with pytest.raises(DatasetError, match=r"being built by aifactory dataset build, pid 4242 on box"):
            build(refused, corpus_db)
    assert load_manifest(generation_dir(settings.data_dir, 1)) is None  # the refused build wrote nothing
    assert build(settings, corpus_db).new_documents == 120  # and the lock is free again


def test_a_second_builder_waits_for_the_first_and_then_builds(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with dataset_lock(settings.data_dir, 0, "the other builder"):
            held.set()
            release.wait(60)

    other = threading.Thread(target=hold)
    other.start()
    assert held.wait(30)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    try:
        report = build(settings, corpus_db)  # waits (DATASET_LOCK_WAIT_SEC 120) until the holder is done
    finally:
        release.set()
        other.join()
    assert report.new_documents == 120 and release.is_set()


def test_two_concurrent_builders_never_corrupt_the_shards(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    add_documents(corpus_db, range(120, 400))
    reports, errors = [], []

    def builder() -> None:
        try:
            reports.append(build(settings, corpus_db))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(report.new_documents for report in reports) == [
        0,
        400,
    ]  # one built, the other found it done
    fresh = small_settings(make_settings, corpus_db, data_dir=tmp_path / "scratch")
    copy_tokenizer(settings, fresh)
    build(fresh, corpus_db)
    assert snapshot(settings) == snapshot(fresh)
