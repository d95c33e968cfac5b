"""The whole text pipeline into the documents table, on SQLite and PostgreSQL."""

from __future__ import annotations

import bz2
import json
import time
from pathlib import Path
from xml.sax.saxutils import escape

import sqlalchemy as sa

from aifactory.db import Database, counters
from aifactory.db import policies as policy_db
from aifactory.db.policies import Policy
from aifactory.db.schema import document_removals, documents, minhash_bands
from aifactory.sources.wikidump import iter_dump
from aifactory.text import staging
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze_many, store
from tests.text import pages

CONFIG = PipelineConfig()


def run(db: Database, *raws: RawDocument) -> dict[str, int]:
    return dict(store(db, analyze_many(list(raws), CONFIG, None), policy_db.load(db)))


def rows(db: Database) -> dict[str, dict]:
    with db.read() as conn:
        return {row.url: dict(row._mapping) for row in conn.execute(sa.select(documents))}


def html(url: str, title: str, paragraphs: list[str], lang: str = "en", **kw: str) -> RawDocument:
    return RawDocument(url=url, body=pages.page(title, paragraphs, lang=lang, **kw), source="web")


def test_pages_become_clean_documents_with_language_and_quality(db: Database) -> None:
    outcome = run(
        db,
        html("https://riverton.example/park", "Council approves park plan", pages.NEWS_EN),
        html("https://kawabe.example/park", "公園整備計画を可決", pages.NEWS_JA, lang="ja"),
        RawDocument(
            url="https://forum.example/t/1",
            body="\n\n".join(pages.FORUM_EN),
            content_type="text/plain",
            source="rss",
        ),
    )
    assert outcome["docs.stored"] == 3 and outcome["docs.stored.web"] == 2 and outcome["docs.stored.rss"] == 1
    stored = rows(db)
    en, ja = stored["https://riverton.example/park"], stored["https://kawabe.example/park"]
    assert en["language"] == "en" and ja["language"] == "ja" and ja["language_confidence"] > 0.8
    assert "railway yard" in en["text"] and "Weather" not in en["text"]
    assert en["domain"] == "riverton.example" and en["quality_score"] > 0.5
    assert (
        en["allowed_for_training"] and en["license_tag"] == "unknown" and en["char_count"] == len(en["text"])
    )
    assert counters.get_all(db, prefix="docs.stored") == {
        "docs.stored": 3,
        "docs.stored.rss": 1,
        "docs.stored.web": 2,
    }
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(minhash_bands)).scalar() == 3 * 14


def test_duplicates_are_counted_not_stored(db: Database) -> None:
    first = html("https://riverton.example/park", "Council approves park plan", pages.NEWS_EN)
    run(db, first)
    again = run(db, RawDocument(url="https://mirror.example/copy", body=first.body, source="web"))
    assert again == {"docs.duplicate.exact": 1}
    syndicated = run(db, RawDocument(url="https://valley.example/park", body=pages.near_copy_of_news()))
    assert syndicated == {"docs.duplicate.near": 1}
    assert list(rows(db)) == ["https://riverton.example/park"]
    assert counters.get_all(db, prefix="docs.duplicate") == {
        "docs.duplicate.exact": 1,
        "docs.duplicate.near": 1,
    }


def test_copies_within_one_batch_are_caught_too(db: Database) -> None:
    """A batch is stored with a few statements, not one query per document: copies of each other
    inside the batch are found in memory, and a URL seen twice keeps its first text."""
    first = html("https://riverton.example/park", "Council approves park plan", pages.NEWS_EN)
    outcome = run(
        db,
        first,
        RawDocument(url="https://mirror.example/copy", body=first.body, source="web"),
        RawDocument(url="https://valley.example/park", body=pages.near_copy_of_news()),
        RawDocument(
            url="https://riverton.example/park", body="\n\n".join(pages.FORUM_EN), content_type="text/plain"
        ),
        RawDocument(
            url="https://forum.example/t/1", body="\n\n".join(pages.FORUM_EN), content_type="text/plain"
        ),
    )
    assert outcome == {
        "docs.stored": 2,
        "docs.stored.web": 2,
        "docs.language.en": 2,
        "docs.chars": outcome["docs.chars"],
        "docs.duplicate.exact": 2,
        "docs.duplicate.near": 1,
    }
    stored = rows(db)
    assert sorted(stored) == ["https://forum.example/t/1", "https://riverton.example/park"]
    assert "railway yard" in stored["https://riverton.example/park"]["text"]
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(minhash_bands)).scalar() == 2 * 14


def test_a_second_node_sees_what_the_first_stored(db_url: str) -> None:
    """Dedup state lives in the database, so it holds across runs and nodes."""
    from aifactory.db import migrate

    one, two = Database(db_url), Database(db_url)
    migrate.upgrade(one)
    try:
        run(one, html("https://riverton.example/park", "Council approves park plan", pages.NEWS_EN))
        assert run(two, RawDocument(url="https://valley.example/park", body=pages.near_copy_of_news())) == {
            "docs.duplicate.near": 1
        }
    finally:
        one.dispose()
        two.dispose()


def test_bad_pages_are_filtered_with_a_reason(db: Database) -> None:
    outcome = run(
        db,
        html("https://spam.example/", "Cheap watches", pages.SPAM_EN),
        RawDocument(url="https://empty.example/", body="<html><body></body></html>"),
        RawDocument(url="https://binary.example/", body="\x00\x01\x02garbage\xff" * 100),
        RawDocument(url="https://short.example/", body="Hello.", content_type="text/plain"),
    )
    assert outcome["docs.filtered.too_short"] >= 1
    assert sum(v for k, v in outcome.items() if k.startswith("docs.filtered.")) == 4
    assert rows(db) == {}


def test_policies_and_opt_outs_mark_documents_not_for_training(db: Database) -> None:
    run(
        db,
        html("https://www.facebook.com/story", "Story", pages.NEWS_EN),
        html("https://en.wikipedia.org/wiki/Kingfisher", "Kingfisher", pages.WIKI_EN),
        RawDocument(
            url="https://optout.example/a",
            body=pages.page("Forum", pages.FORUM_EN),
            optout_reason="optout:robots-ai",
        ),
    )
    stored = rows(db)
    facebook = stored["https://www.facebook.com/story"]
    assert not facebook["allowed_for_training"] and facebook["block_reason"] == "policy:facebook.com"
    wiki = stored["https://en.wikipedia.org/wiki/Kingfisher"]
    assert wiki["allowed_for_training"] and wiki["license_tag"] == "cc-by-sa-4.0"
    optout = stored["https://optout.example/a"]
    assert not optout["allowed_for_training"] and optout["block_reason"] == "optout:robots-ai"
    assert counters.get_all(db, prefix="docs.blocked") == {"docs.blocked.optout": 1, "docs.blocked.policy": 1}


def test_changing_a_policy_retags_stored_documents_on_label_boundaries(db: Database) -> None:
    run(
        db,
        html("https://news.example.org/park", "Council approves park plan", pages.NEWS_EN),
        html("https://badexample.org/birds", "Kingfisher", pages.WIKI_EN),
        RawDocument(
            url="https://example.org/optout",
            body=pages.page("Forum", pages.FORUM_EN),
            optout_reason="optout:tdm",
        ),
    )
    policy_db.upsert(db, Policy("example.org", license_tag="cc-by-4.0", allow_training=False))
    assert policy_db.retag(db, "example.org") == 2
    stored = rows(db)
    assert stored["https://news.example.org/park"]["block_reason"] == "policy:example.org"
    assert stored["https://news.example.org/park"]["license_tag"] == "cc-by-4.0"
    assert stored["https://badexample.org/birds"]["allowed_for_training"]  # not a subdomain
    policy_db.upsert(db, Policy("example.org", license_tag="cc-by-4.0", allow_training=True))
    policy_db.retag(db, "https://EXAMPLE.org/")
    stored = rows(db)
    assert stored["https://news.example.org/park"]["allowed_for_training"]
    assert not stored["https://example.org/optout"]["allowed_for_training"]  # its own opt-out stays
    assert stored["https://example.org/optout"]["block_reason"] == "optout:tdm"


def test_long_documents_are_split_not_dropped(db: Database) -> None:
    long_text = pages.varied_text(300)
    outcome = store(
        db,
        analyze_many(
            [RawDocument(url="https://long.example/", body=long_text, content_type="text/plain")],
            PipelineConfig(max_doc_chars=20_000),
            None,
        ),
        [],
    )
    stored = rows(db)
    assert len(stored) >= 5 and outcome["docs.stored"] == len(stored)
    assert "https://long.example/#part-2" in stored


def test_pii_is_masked_in_stored_text(db: Database) -> None:
    text = "\n\n".join([*pages.FORUM_EN, "Mail me at baker@example.net or call 090-1234-5678 any time."])
    run(db, RawDocument(url="https://forum.example/t/2", body=text, content_type="text/plain"))
    stored = rows(db)["https://forum.example/t/2"]["text"]
    assert "baker@" not in stored and "email@example.com" in stored and "1234-5678" not in stored


def test_staged_pages_are_claimed_leased_and_finished(db: Database) -> None:
    with db.begin() as conn:
        staging.stage(
            db,
            conn,
            [
                RawDocument(
                    url=f"https://s.example/{i}", body="text " * 50, links=["https://other.example/x"]
                )
                for i in range(3)
            ],
            "n1",
        )
    first = staging.claim(db, "n1", 2)
    assert [raw.url for _, raw in first] == ["https://s.example/0", "https://s.example/1"]
    assert first[0][1].body == "text " * 50 and first[0][1].links == ["https://other.example/x"]
    second = staging.claim(db, "n2", 5)  # the first two are held by n1
    assert [raw.url for _, raw in second] == ["https://s.example/2"]
    with db.begin() as conn:  # n1 died: its lease runs out
        conn.execute(staging.staged_pages.update().values(claimed_until=db.now() - 1))
    assert len(staging.claim(db, "n3", 5)) == 3
    with db.begin() as conn:
        staging.finish(conn, [page_id for page_id, _ in first])
    assert staging.backlog(db) == 1


def write_dump(path: Path) -> None:
    pages_xml = [
        (
            "Kingfisher",
            0,
            "The '''kingfisher''' is a [[bird]].<ref>x</ref> It eats [[fish]].\n"
            "[[Category:Birds]]\n== References ==\n* a",
        ),
        ("Talk:Kingfisher", 1, "Discussion"),
        ("King fisher", 0, "#REDIRECT [[Kingfisher]]"),
        (
            "カワセミ",
            0,
            "'''カワセミ'''は[[鳥]]である。{{Infobox|x=1}}[[ファイル:a.jpg|thumb|写真]]川に住む。",
        ),
    ]
    body = "".join(
        f"<page><title>{t}</title><ns>{ns}</ns><revision><text>{escape(x)}</text></revision></page>"
        for t, ns, x in pages_xml
    )
    xml = f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">{body}</mediawiki>'
    path.write_bytes(bz2.compress(xml.encode()))


def test_wikipedia_dump_is_streamed_with_markup_removed(tmp_path: Path) -> None:
    dump = tmp_path / "jawiki-20240101-pages-articles.xml.bz2"
    write_dump(dump)
    docs = list(iter_dump(dump))
    assert [d.title for d in docs] == ["Kingfisher", "カワセミ"]
    assert docs[0].body == "Kingfisher\n\nThe kingfisher is a bird. It eats fish."
    assert (
        docs[0].url == "https://ja.wikipedia.org/wiki/Kingfisher" and docs[0].license_hint == "cc-by-sa-4.0"
    )
    assert docs[1].body.endswith("カワセミは鳥である。川に住む。")


def test_ingest_a_folder_of_mixed_files(db: Database, tmp_path: Path, make_settings) -> None:
    from aifactory.text.ingest import ingest

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "park.txt").write_text("\n\n".join(pages.NEWS_EN))
    (folder / "birds.md").write_text("# Kingfishers\n\n" + "\n\n".join(pages.WIKI_EN))
    (folder / "sub" / "ja.html").write_text(pages.page("公園", pages.NEWS_JA, lang="ja"))
    (folder / "sub" / "forum.jsonl").write_text(
        json.dumps({"text": "\n\n".join(pages.FORUM_EN), "url": "https://forum.example/sourdough"})
        + "\n\n"
        + json.dumps({"no_text": 1})
        + "\n"
    )
    (folder / "image.png").write_bytes(b"\x89PNG\x00\x00")
    (folder / "broken.txt").write_bytes(b"\x00\x01 binary")
    write_dump(folder / "enwiki-20240101-pages-articles.xml.bz2")
    started = time.monotonic()
    totals, skipped = ingest(make_settings(database_url=db.url), db, [folder], show_progress=False, workers=1)
    assert time.monotonic() - started < 60
    assert totals["docs.stored"] == 4 and totals["docs.stored.local"] == 4
    assert totals["docs.filtered.too_short"] == 2  # the two tiny dump articles
    assert len(skipped) == 2 and "binary" in skipped[0]
    assert skipped[1] == "1 file of type .png (use .txt, .md, .html, .jsonl or a wiki dump)"
    stored = rows(db)
    assert "https://forum.example/sourdough" in stored
    assert {r["language"] for r in stored.values()} == {"en", "ja"}


def test_a_refetched_page_whose_text_changed_replaces_its_document(db: Database) -> None:
    url = "https://riverton.example/park"
    run(db, html(url, "Council approves park plan", pages.NEWS_EN))
    (old,) = rows(db).values()
    assert run(db, html(url, "Council approves park plan", pages.NEWS_EN)) == {"docs.duplicate.exact": 1}

    edited = [
        *pages.NEWS_EN[:3],
        "Update: the council has published the design, which adds a skate park.",
        pages.NEWS_EN[4],
    ]
    outcome = run(db, html(url, "Council approves park plan", edited))
    assert outcome["docs.replaced"] == 1 and "docs.stored" not in outcome  # an edit is not a near copy
    (new,) = rows(db).values()
    assert (
        new["id"] != old["id"] and "skate park" in new["text"] and new["content_hash"] != old["content_hash"]
    )
    assert counters.get_all(db)["docs.chars"] == new["char_count"]
    with db.read() as conn:
        bands = conn.execute(sa.select(minhash_bands.c.doc_id).distinct()).scalars().all()
        removed = conn.execute(sa.select(document_removals)).all()
    assert bands == [new["id"]]  # the old version's LSH bands went with it
    assert [(r.doc_id, r.url, r.reason) for r in removed] == [(old["id"], url, "replaced")]

    # A new version that copies another page is a duplicate: the page's stored version stays.
    run(db, html("https://forum.example/t/1", "Sourdough", pages.FORUM_EN))
    assert run(db, html(url, "Sourdough", pages.FORUM_EN)) == {"docs.duplicate.exact": 1}
    assert "skate park" in rows(db)[url]["text"]
