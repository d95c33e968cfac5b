"""The incremental build: new documents only, same result as from scratch, frozen split, safe failures."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aifactory.dataset import DatasetError, builder, records, rules
from aifactory.dataset.builder import build
from aifactory.dataset.encode import Encoder
from aifactory.dataset.shards import VAL, ShardWriter, generation_dir, load_manifest
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db import counters
from aifactory.db.database import Database
from aifactory.db.schema import documents
from aifactory.settings import Settings
from tests.dataset.helpers import (
    add_documents,
    all_tokens,
    copy_tokenizer,
    small_settings,
    snapshot,
    trained_tokenizer,
)


def rebuilt_from_scratch(make_settings: Any, db: Database, settings: Settings, tmp_path: Path) -> Settings:
    """The same documents built in one go into another DATA_DIR with the same tokenizer."""
    fresh = small_settings(make_settings, db, data_dir=tmp_path / "scratch")
    copy_tokenizer(settings, fresh)
    build(fresh, db)
    return fresh


def test_an_incremental_build_equals_a_build_from_scratch(
    make_settings: Any, settings: Settings, corpus_db: Database, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    tags = [build(settings, corpus_db).tag]
    for start in (120, 160, 200):
        add_documents(corpus_db, range(start, start + 30 + start % 7))
        tags.append(build(settings, corpus_db).tag)
    assert tags == ["g1-v1", "g1-v2", "g1-v3", "g1-v4"]
    fresh = rebuilt_from_scratch(make_settings, corpus_db, settings, tmp_path)
    assert snapshot(settings) == snapshot(fresh)  # same tokens and same split, document by document
    assert all_tokens(settings) == all_tokens(fresh)  # and the same bytes on disk, in the same order
    manifest = load_manifest(generation_dir(settings.data_dir, 1))
    assert len(manifest.shards) > 5  # 2,000-token shards: the builds spanned many
    with corpus_db.read() as conn:
        texts = dict(conn.execute(sa.select(documents.c.id, documents.c.text)).all())
    for doc_id, (tokens, _) in snapshot(settings).items():
        # `<s> text </s>`: BOS starts every document, as Hugging Face and llama.cpp add it at inference.
        assert tokens[0] == tokenizer.bos_id and tokenizer.bos_id not in tokens[1:]
        assert tokens[-1] == tokenizer.eos_id and tokenizer.eos_id not in tokens[:-1]
        assert tokenizer.decode(tokens[1:-1]) == texts[doc_id]


def test_building_twice_without_new_documents_does_nothing(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    first = build(settings, corpus_db)
    manifest = generation_dir(settings.data_dir, 1) / "manifest.json"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    again = build(settings, corpus_db)
    assert first.new_documents == 120 and again.up_to_date and again.tag == first.tag
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before
    assert [row["tag"] for row in records.list_versions(corpus_db)] == ["g1-v1"]


def test_the_split_of_existing_documents_never_changes(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    build(settings, corpus_db)
    before = {doc_id: split for doc_id, (_, split) in snapshot(settings).items()}
    add_documents(corpus_db, range(120, 400))
    build(settings, corpus_db)
    after = {doc_id: split for doc_id, (_, split) in snapshot(settings).items()}
    assert {doc_id: after[doc_id] for doc_id in before} == before
    share = sum(split == VAL for split in after.values()) / len(after)
    assert 0.12 < share < 0.28  # DATASET_VAL_FRACTION=0.2
    # The parts of one long page share their page's draw: a page is never half train, half validation.
    assert rules.split_draw("https://a.example/x#part-3") == rules.split_draw("https://a.example/x")


def test_each_languages_validation_stops_taking_documents_at_its_cap(
    make_settings: Any, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    settings = small_settings(make_settings, corpus_db, dataset_val_max_tokens=1000)
    build(settings, corpus_db)
    manifest = load_manifest(generation_dir(settings.data_dir, 1))
    largest = max(len(tokens) for tokens, _ in snapshot(settings).values())
    assert set(manifest.val_tokens_by_language) == {"en", "ja"}
    assert all(1000 <= tokens < 1000 + largest for tokens in manifest.val_tokens_by_language.values())
    assert sum(manifest.val_tokens_by_language.values()) == manifest.val_tokens
    assert manifest.train_tokens + manifest.val_tokens == manifest.total_tokens


def test_a_small_language_gets_its_minimum_of_validation_tokens(make_settings: Any, db: Database) -> None:
    """2% of the documents go to validation, but a language with few documents would get almost none:
    until it has DATASET_VAL_MIN_TOKENS_PER_LANGUAGE, a fifth of its documents do (by the URL draw)."""
    add_documents(db, range(0, 600, 2), language="en")
    add_documents(db, range(1, 81, 2), language="ja")
    settings = small_settings(
        make_settings, db, dataset_val_fraction=0.02, dataset_val_min_tokens_per_language=1500
    )
    trained_tokenizer(settings, db)
    build(settings, db)
    manifest = load_manifest(generation_dir(settings.data_dir, 1))
    by_language = manifest.val_tokens_by_language
    largest = max(len(tokens) for tokens, _ in snapshot(settings).values())
    assert 1500 <= by_language["ja"] < 1500 + 2 * largest  # 40 documents: ~8 of them, not ~1
    assert by_language["en"] >= 1500
    splits = snapshot(settings)
    ja_val = sum(1 for doc_id, (_, split) in splits.items() if split == VAL and doc_id > 300)
    assert ja_val >= 3


def test_worker_processes_build_the_same_tokens(
    make_settings: Any,
    settings: Settings,
    corpus_db: Database,
    tokenizer: Tokenizer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build(settings, corpus_db)
    monkeypatch.setattr(builder, "SMALL_BUILD_CHARS", 0)  # use the pool even for a small corpus
    monkeypatch.setattr(builder, "CHUNK_DOCS", 16)
    parallel = small_settings(make_settings, corpus_db, data_dir=tmp_path / "parallel")
    copy_tokenizer(settings, parallel)
    report = build(parallel, corpus_db, workers=2)
    assert report.workers == 2 and report.new_documents == 120
    assert all_tokens(parallel) == all_tokens(settings) and snapshot(parallel) == snapshot(settings)


def test_a_document_the_tokenizer_fails_on_is_skipped_and_counted(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    [poison] = add_documents(corpus_db, [500], text="this text breaks the tokenizer: POISON")
    real = Encoder.encode_texts

    def fragile(self: Encoder, texts: list[str]) -> list:
        if any("POISON" in text for text in texts):
            self.sp = FailingOn("POISON", self.sp)
        return real(self, texts)

    monkeypatch.setattr(Encoder, "encode_texts", fragile)
    report = build(settings, corpus_db)
    assert report.skipped == 1 and poison in report.failures and "RuntimeError" in report.failures[poison]
    assert report.new_documents == 120 and poison not in snapshot(settings)
    assert records.list_versions(corpus_db)[0]["skipped"] == 1
    assert build(settings, corpus_db).up_to_date  # it is not retried forever


class FailingOn:
    """A SentencePiece processor that fails on texts containing a marker, like a tokenizer bug would."""

    def __init__(self, marker: str, sp: Any) -> None:
        self.marker, self.sp = marker, sp

    def encode(self, text: Any, **kwargs: Any) -> Any:
        texts = text if isinstance(text, list) else [text]
        if any(self.marker in t for t in texts):
            raise RuntimeError("tokenizer failure")
        return self.sp.encode(text, **kwargs)


def test_a_real_encoding_failure_spoils_no_other_text(tokenizer: Tokenizer, corpus_db: Database) -> None:
    encoder = Encoder(corpus_db, str(tokenizer.model_path), tokenizer.bos_id, tokenizer.eos_id, "uint16")
    results = encoder.encode_texts(["fine text", "lone surrogate \udc80 here", "also fine"])
    assert isinstance(results[1], str) and "Error" in results[1]
    assert [tokenizer.decode(results[0]), tokenizer.decode(results[2])] == ["fine text", "also fine"]


def test_documents_outside_train_lang_only_are_not_tokenized(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    french = add_documents(corpus_db, range(300, 310), language="fr")
    report = build(settings, corpus_db)
    assert report.other_language == 10 and report.new_documents == 120
    assert not set(french) & set(snapshot(settings))


def test_a_full_disk_fails_clearly_and_the_previous_version_stays_usable(
    make_settings: Any,
    settings: Settings,
    corpus_db: Database,
    tokenizer: Tokenizer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build(settings, corpus_db)
    previous = snapshot(settings)
    add_documents(corpus_db, range(120, 240))
    monkeypatch.setattr(builder, "CHUNK_DOCS", 8)
    monkeypatch.setattr(builder, "COMMIT_EVERY_SEC", 1e9)
    real_append, calls = ShardWriter.append, []

    def append(self: ShardWriter, tokens: Any, records: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            real_append(self, tokens[:10], records[:0])  # a torn write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, tokens, records)

    monkeypatch.setattr(ShardWriter, "append", append)
    with pytest.raises(
        DatasetError, match=r"disk is full.*previous version g1-v1 \(120 documents\) stays usable"
    ):
        build(settings, corpus_db)
    assert load_manifest(generation_dir(settings.data_dir, 1)).tag == "g1-v1"
    assert snapshot(settings) == previous
    monkeypatch.setattr(ShardWriter, "append", real_append)
    assert build(settings, corpus_db).new_documents == 120
    assert all_tokens(settings) == all_tokens(
        rebuilt_from_scratch(make_settings, corpus_db, settings, tmp_path)
    )


def test_a_document_committed_late_below_the_watermark_is_picked_up(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL a slow transaction can commit id 1000 after id 1001 was built.
    with corpus_db.begin() as conn:
        conn.execute(documents.delete().where(documents.c.id == 100))
    build(settings, corpus_db)
    manifest = load_manifest(generation_dir(settings.data_dir, 1))
    assert manifest.watermark == 120 and [gap[:2] for gap in manifest.gaps] == [[100, 100]]
    assert build(settings, corpus_db).up_to_date  # an open gap alone is no reason to write anything
    add_documents(corpus_db, [99])  # it was id 100; it gets id 121; move it into the gap as a late commit
    with corpus_db.begin() as conn:
        conn.execute(documents.update().where(documents.c.url == "https://example.com/doc/99").values(id=100))
    assert build(settings, corpus_db).new_documents == 1
    assert 100 in snapshot(settings)
    assert load_manifest(generation_dir(settings.data_dir, 1)).gaps == []
    # A gap nobody fills is forgotten after GAP_SETTLE_SEC (an id burnt by a rolled-back insert).
    burnt, _ = add_documents(corpus_db, [700, 701])
    with corpus_db.begin() as conn:
        conn.execute(documents.delete().where(documents.c.id == burnt))
    assert build(settings, corpus_db).new_documents == 1
    gaps = load_manifest(generation_dir(settings.data_dir, 1)).gaps
    assert any(lo <= burnt <= hi for lo, hi, _ in gaps)
    monkeypatch.setattr(builder, "GAP_SETTLE_SEC", 0.0)
    add_documents(corpus_db, [702])
    assert build(settings, corpus_db).new_documents == 1
    assert load_manifest(generation_dir(settings.data_dir, 1)).gaps == []


def test_each_build_records_a_dataset_version(
    settings: Settings, corpus_db: Database, tokenizer: Tokenizer
) -> None:
    counters.add(corpus_db, {"docs.blocked.policy": 4, "docs.blocked.robots": 1, "docs.filtered.short": 7})
    counters.add(corpus_db, {"docs.duplicate.exact": 2, "docs.duplicate.near": 3, "docs.stored": 120})
    add_documents(corpus_db, range(200, 210), source="wikipedia", domain="en.wikipedia.org")
    build(settings, corpus_db)
    [row] = records.list_versions(corpus_db)
    manifest = load_manifest(generation_dir(settings.data_dir, 1))
    assert row["tag"] == "g1-v1" and row["tokenizer_hash"] == tokenizer.hash
    assert (row["blocked"], row["filtered"], row["duplicates"]) == (5, 7, 5)
    assert row["documents"] == row["new_documents"] == 130
    assert (row["train_tokens"], row["val_tokens"]) == (manifest.train_tokens, manifest.val_tokens)
    assert row["per_source"]["wikipedia"]["documents"] == 10 and row["per_source"]["web"]["documents"] == 120
    per_source_tokens = sum(s["train_tokens"] + s["val_tokens"] for s in row["per_source"].values())
    assert per_source_tokens == manifest.total_tokens


def test_without_a_tokenizer_the_build_says_what_is_missing(settings: Settings, corpus_db: Database) -> None:
    with pytest.raises(DatasetError, match=r"no tokenizer yet.*TOKENIZER_MIN_CORPUS_CHARS"):
        build(settings, corpus_db)
