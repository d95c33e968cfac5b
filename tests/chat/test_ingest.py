"""`aifactory ingest --chat`: conversations stored once, versioned, split for good, policies applied,
bad lines counted with their line number, useless files refused with a clear error."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aifactory.chat import store
from aifactory.chat.ingest import ChatFileError, ingest_file, ingest_files, scan_inbox
from aifactory.db import counters
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.db.schema import conversations


def qa(number: int, answer: str = "") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"Question number {number}: how do the tides of the sea work?"},
            {
                "role": "assistant",
                "content": answer or f"Answer {number}: the moon pulls the water of the sea.",
            },
        ]
    }


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(conversations).order_by(conversations.c.id)))


def test_a_file_is_ingested_with_its_bad_lines_counted(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    path = write_jsonl(tmp_path / "talks.jsonl", [qa(1), "{broken", {"messages": "nope"}, qa(2), qa(1)])
    result = ingest_file(settings, db, path)
    assert result.counts["chat.stored"] == 2 and result.counts["chat.duplicate"] == 1
    assert [line for line, _ in result.problems] == [2, 3]
    assert "not valid JSON" in result.problems[0][1] and "messages must be a list" in result.problems[1][1]
    stored = rows(db)
    assert [row.key for row in stored] == ["talks.jsonl#line:1", "talks.jsonl#line:4"]
    assert all(row.language == "en" and row.format == "openai" and not row.synthetic for row in stored)


def test_a_new_version_replaces_the_old_and_keeps_its_split(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings(chat_val_fraction=0.5)
    path = write_jsonl(tmp_path / "talks.jsonl", [qa(n) for n in range(1, 21)])
    ingest_file(settings, db, path)
    before = {row.key: row for row in rows(db)}
    assert {row.split for row in before.values()} == {"train", "val"}  # 20 draws at one half
    edited = [qa(n) for n in range(1, 21)]
    edited[4] = qa(5, "Answer five, corrected: the moon and the sun both pull the water.")
    result = ingest_file(settings, db, write_jsonl(path, edited))
    assert result.counts["chat.replaced"] == 1 and result.counts["chat.unchanged"] == 19
    after = {row.key: row for row in rows(db)}
    assert after.keys() == before.keys()
    changed = after["talks.jsonl#line:5"]
    assert changed.version == 2 and "corrected" in changed.messages[1]["content"]
    assert all(after[key].split == before[key].split for key in before)  # the split never moves


def test_conversations_refused_by_a_policy_are_counted(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    policy_db.upsert(db, policy_db.Policy("blocked.example", allow_training=False))
    refused, allowed = qa(1), qa(2)
    refused["url"] = "https://blocked.example/page"
    allowed["url"] = "https://fine.example/page"
    result = ingest_file(make_settings(), db, write_jsonl(tmp_path / "c.jsonl", [refused, allowed]))
    assert result.counts["chat.refused.policy"] == 1 and result.counts["chat.stored"] == 1
    assert [row.domain for row in rows(db)] == ["fine.example"]


def test_empty_and_all_invalid_files_are_clear_errors(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ChatFileError, match="empty"):
        ingest_file(settings, db, tmp_path / "empty.jsonl")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a document, not a chat"}, "[1"])
    with pytest.raises(ChatFileError, match=r"none of its 2 records.*line 1: unknown format"):
        ingest_file(settings, db, bad)
    good = write_jsonl(tmp_path / "good.jsonl", [qa(1)])
    results, errors = ingest_files(settings, db, [bad, good])  # the good file goes in all the same
    assert [r.counts["chat.stored"] for r in results] == [1] and len(errors) == 1
    assert rows(db)[0].split in (store.TRAIN, store.VAL)


def test_the_inbox_ingests_and_files_away(db: Database, make_settings: Any) -> None:
    settings = make_settings()
    inbox = Path(settings.data_dir) / "chat-inbox"
    inbox.mkdir(parents=True)
    good = write_jsonl(inbox / "good.jsonl", [qa(1), qa(2)])
    bad = write_jsonl(inbox / "bad.jsonl", ["nope"])
    old = time.time() - 10
    for path in (good, bad):
        os.utime(path, (old, old))
    results = scan_inbox(settings, db)
    assert [r.counts["chat.stored"] for r in results] == [2]
    assert (inbox / "done" / "good.jsonl").exists() and (inbox / "failed" / "bad.jsonl").exists()
    assert "none of its 1 records" in (inbox / "failed" / "bad.jsonl.error.txt").read_text()
    assert not good.exists() and scan_inbox(settings, db) == []


def test_unusual_but_valid_json_and_odd_shapes_never_stop_a_file(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    """U+2028 inside a string is valid JSON (written unescaped by ensure_ascii=False): one record, not
    two. A content part of null, a nesting too deep: that line is counted, the rest goes in."""
    settings = make_settings()
    separated = qa(1, "Answer one: the moon\u2028pulls the water of the sea, twice a day.")
    lines = [
        json.dumps(separated, ensure_ascii=False),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}),
        "[" * 100_000 + "]" * 100_000,
        json.dumps(qa(2)),
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = ingest_file(settings, db, path)
    assert result.records == 4 and result.counts["chat.stored"] == 2
    assert [line for line, _ in result.problems] == [2, 3]
    assert "twice a day" in rows(db)[0].messages[1]["content"]  # the record was not cut at U+2028


def test_files_of_the_same_name_in_two_folders_are_two_files(
    db: Database, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    for folder, number in (("a", 1), ("b", 2)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        write_jsonl(tmp_path / "data" / folder / "train.jsonl", [qa(number)])
    results, errors = ingest_files(settings, db, [tmp_path / "data"])
    assert not errors and sum(r.counts["chat.stored"] for r in results) == 2
    assert sorted(row.key for row in rows(db)) == ["a/train.jsonl#line:1", "b/train.jsonl#line:1"]


def test_the_inbox_reports_bad_lines_beside_the_file_and_never_overwrites_a_filed_one(
    db: Database, make_settings: Any
) -> None:
    settings = make_settings()
    inbox = Path(settings.data_dir) / "chat-inbox"
    inbox.mkdir(parents=True)
    old = time.time() - 10
    for round_ in (1, 2):
        path = write_jsonl(inbox / "talks.jsonl", [qa(round_), "{broken"])
        os.utime(path, (old, old))
        [result] = scan_inbox(settings, db)
        assert result.counts["chat.invalid"] == 1
    assert (inbox / "done" / "talks.jsonl").exists() and (inbox / "done" / "talks.jsonl.2").exists()
    assert "line 2: not valid JSON" in (inbox / "done" / "talks.jsonl.report.txt").read_text()
    assert counters.get_all(db)["chat.invalid"] == 2
