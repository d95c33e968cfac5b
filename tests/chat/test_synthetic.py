"""Synthetic conversations from fixture pages: the page's language and URL, section headings kept
beside the text without changing the text."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aifactory.chat import store, synthetic
from aifactory.chat.upkeep import chat_upkeep
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.db.schema import documents
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze
from aifactory.text.pipeline import store as store_documents
from tests.text.pages import DOCS_EN, WIKI_EN, WIKI_JA, page

DOCS_URL = "https://app.example/docs/configuration.html"
WIKI_EN_URL = "https://en.wikipedia.org/wiki/Common_kingfisher"
WIKI_JA_URL = "https://ja.wikipedia.org/wiki/カワセミ"


def docs_with_sections() -> str:
    sections = "".join(
        f"<h2>{heading}</h2><p>{text}</p>"
        for heading, text in zip(
            ("Installing the server", "Changing the port", "Data directory"), DOCS_EN, strict=True
        )
    )
    return page("Configuration", [DOCS_EN[0]], header="App Docs", extra_body=sections)


def ingest_fixture_pages(db: Database) -> None:
    raws = [
        RawDocument(DOCS_URL, docs_with_sections(), source="docs"),
        RawDocument(WIKI_EN_URL, "\n\n".join(WIKI_EN), "text/plain", "wikipedia", title="Common kingfisher"),
        RawDocument(WIKI_JA_URL, "\n\n".join(WIKI_JA), "text/plain", "wikipedia", title="カワセミ"),
    ]
    analyzed = [part for raw in raws for part in analyze(raw, PipelineConfig())]
    assert all(part.reject_reason is None for part in analyzed), [p.reject_reason for p in analyzed]
    store_documents(db, analyzed, policy_db.load(db))


def test_section_headings_are_kept_beside_the_unchanged_text(db: Database) -> None:
    ingest_fixture_pages(db)
    with db.read() as conn:
        row = conn.execute(sa.select(documents).where(documents.c.url == DOCS_URL)).one()
    headings = [heading for _, _, heading in row.sections]
    assert headings == ["Configuration", "Installing the server", "Changing the port", "Data directory"]
    for offset, _, heading in row.sections:  # each offset starts the heading's own line of the text
        assert row.text[offset:].split("\n", 1)[0].strip() == heading
    plain = analyze(RawDocument(DOCS_URL, docs_with_sections(), source="docs"), PipelineConfig())[0]
    assert row.text == plain.text and "<h2>" not in row.text


def test_pages_give_questions_in_their_language_with_their_url(db: Database, make_settings: Any) -> None:
    ingest_fixture_pages(db)
    outcome = synthetic.build(make_settings(), db)
    assert outcome["chat.synthetic.documents"] == 3
    made = {(c.source_url, c.messages[0]["content"]): c for c in store.load(db)}
    assert all(c.synthetic for c in made.values())
    en = made[(WIKI_EN_URL, "What is Common kingfisher?")]
    assert en.language == "en" and en.messages[1]["content"] == WIKI_EN[0]
    ja = made[(WIKI_JA_URL, "カワセミとは何ですか？")]
    assert ja.language == "ja" and ja.messages[1]["content"] == WIKI_JA[0]
    howto = {q: c for (url, q), c in made.items() if url == DOCS_URL}
    assert set(howto) == {
        "How do I install the server in Configuration?",
        "How do I change the port in Configuration?",
        "How do I deal with data directory in Configuration?",
    }
    assert howto["How do I change the port in Configuration?"].messages[1]["content"] == DOCS_EN[1]
    assert synthetic.build(make_settings(), db) == {}  # the watermark: each document once


def test_the_setting_turns_it_off(db: Database, make_settings: Any) -> None:
    ingest_fixture_pages(db)
    assert synthetic.build(make_settings(enable_synthetic_chat=False), db) == {}
    assert store.load(db) == []


def test_japanese_howto_phrasing() -> None:
    question = synthetic.howto_question("インストール", "サーバーの設定", "ja")
    assert question == "サーバーの設定で「インストール」はどうすればいいですか？"


def test_the_text_engines_upkeep_reads_the_inbox_and_the_corpus(db: Database, make_settings: Any) -> None:
    settings = make_settings()
    ingest_fixture_pages(db)
    inbox = Path(settings.data_dir) / "chat-inbox"
    inbox.mkdir(parents=True)
    record = {
        "instruction": "How do kingfishers catch fish?",
        "output": "They dive from a perch above the water.",
    }
    (inbox / "mine.jsonl").write_text(json.dumps(record) + "\n")
    old = time.time() - 10
    os.utime(inbox / "mine.jsonl", (old, old))
    outcome = chat_upkeep(settings, db)
    assert outcome["chat.files"] == 1 and outcome["chat.synthetic.documents"] == 3
    kinds = sorted(c.synthetic for c in store.load(db))
    assert kinds.count(False) == 1 and kinds.count(True) == 5
