"""Every drop has a visible reason: recorded with its measured value, explained rule by rule."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from aifactory.db import Database, counters, migrate
from aifactory.db import policies as policy_db
from aifactory.db import rejections as rejection_log
from aifactory.db.schema import rejections
from aifactory.sources.files import read_file
from aifactory.text import staging
from aifactory.text.explain import explain, render
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze_many, store
from tests.collect.sites import SiteServer, page, robots
from tests.test_cli import aifactory
from tests.text import pages
from tests.text.test_quality import JA_SHELL_PAGE

SPAM = "\n".join(pages.SPAM_EN)


def run(db: Database, *raws: RawDocument, max_rows: int = 100_000) -> dict[str, int]:
    docs = analyze_many(list(raws), PipelineConfig(), None)
    return dict(store(db, docs, policy_db.load(db), node_id="n1", rejections_max_rows=max_rows))


def text(url: str, body: str) -> RawDocument:
    return RawDocument(url=url, body=body, content_type="text/plain", source="rss")


def test_dropped_documents_are_recorded_with_value_threshold_and_totals(db: Database) -> None:
    article = RawDocument(url="https://riverton.example/park", body=pages.page("Park", pages.NEWS_EN))
    run(
        db,
        article,
        text("https://spam.example/a", SPAM),
        text("https://spam.example/b", "Too short."),
        RawDocument(url="https://mirror.example/copy", body=article.body),
    )
    run(db, RawDocument(url="https://valley.example/park", body=pages.near_copy_of_news()))
    rows = {row["url"]: row for row in rejection_log.recent(db)}
    assert set(rows) == {
        "https://spam.example/a",
        "https://spam.example/b",
        "https://mirror.example/copy",
        "https://valley.example/park",
    }
    spam = rows["https://spam.example/a"]
    assert (spam["domain"], spam["reason"], spam["source"], spam["language"]) == (
        "spam.example",
        "repeated_lines",
        "rss",
        "en",
    )
    assert spam["value"] > spam["threshold"] == 0.3 and spam["node_id"] == "n1" and spam["created_at"] > 0
    assert rows["https://spam.example/b"]["reason"] == "too_short"
    assert (rows["https://spam.example/b"]["value"], rows["https://spam.example/b"]["threshold"]) == (10, 120)
    assert rows["https://mirror.example/copy"]["reason"] == "duplicate_exact"
    near = rows["https://valley.example/park"]
    assert near["reason"] == "duplicate_near" and near["value"] >= near["threshold"] == 0.75
    # the totals agree with the counters, and filter by domain and reason
    assert (
        rejection_log.total(db)
        == 4
        == sum(
            v for k, v in counters.get_all(db).items() if k.startswith(("docs.filtered.", "docs.duplicate."))
        )
    )
    assert [
        (row["domain"], row["reason"], row["count"])
        for row in rejection_log.counts(db, domain="spam.example")
    ] == [
        ("spam.example", "repeated_lines", 1),
        ("spam.example", "too_short", 1),
    ]
    assert [row["url"] for row in rejection_log.recent(db, reason="too_short")] == ["https://spam.example/b"]


def test_the_log_is_bounded_and_the_totals_are_not(db: Database) -> None:
    for batch in range(3):
        run(db, *(text(f"https://spam.example/{batch}/{i}", "Too short.") for i in range(4)), max_rows=5)
    with db.read() as conn:
        kept = [row.url for row in conn.execute(sa.select(rejections.c.url).order_by(rejections.c.id))]
    assert kept == [f"https://spam.example/{b}/{i}" for b, i in [(1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]]
    assert rejection_log.counts(db) == [
        {
            "domain": "spam.example",
            "reason": "too_short",
            "count": 12,
            "last_at": rejection_log.counts(db)[0]["last_at"],
        }
    ]


def test_explain_prints_every_rule_of_a_stored_or_dropped_local_file(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "spam.txt").write_text(SPAM)
    (folder / "guide.html").write_text(JA_SHELL_PAGE)
    db = Database(f"sqlite:///{tmp_path / 'factory.db'}")
    migrate.upgrade(db)
    run(db, *(raw for path in sorted(folder.iterdir()) for raw in read_file(path)))
    db.dispose()
    dropped = aifactory("explain", str(folder / "spam.txt"), cwd=tmp_path, DATABASE_URL=db.url)
    assert dropped.returncode == 0, dropped.stderr
    out = dropped.stdout
    assert "recorded: dropped" in out and "as repeated_lines" in out and "against 0.3" in out
    assert "repeated_lines" in out and "FAIL" in out and "verdict: dropped: repeated_lines" in out
    kept = aifactory("explain", (folder / "guide.html").as_uri(), "--json", cwd=tmp_path, DATABASE_URL=db.url)
    report = json.loads(kept.stdout)
    assert report["stored"] and report["stored"][0]["language"] == "ja" and not report["recorded"]
    [part] = report["parts"]
    assert part["accepted"] and part["language"] == "ja"
    rules = {check["rule"] for check in part["checks"]}
    assert {"low_hiragana", "repeated_ngrams", "too_short", "link_list"} <= rules
    assert all({"value", "threshold", "passed"} <= set(check) for check in part["checks"])


def test_explain_fetches_a_page_politely_and_says_when_it_cannot(db: Database, make_settings) -> None:
    settings = make_settings(
        database_url=db.url, crawler_private_allowlist=["127.0.0.1"], crawler_domain_min_interval_sec=0
    )
    routes = {
        "/robots.txt": robots("User-agent: *\nDisallow: /private/\n"),
        "/guide": page("<article>" + "".join(f"<p>{p}</p>" for p in pages.NEWS_JA) + "</article>"),
        "/private/notes": page("<p>secret</p>"),
    }
    with SiteServer(routes) as site:
        found = explain(settings, db, site.url("/guide"))
        assert found.source == "fetched page" and found.parts and found.parts[0].verdict.accepted
        assert "judged now: the fetched page (HTTP 200" in "\n".join(render(found))
        assert site.paths() == ["/robots.txt", "/guide"]
        assert site.hits_for("/guide")[0].headers["User-Agent"].startswith("AIFactoryBot/")

        refused = explain(settings, db, site.url("/private/notes"))
        assert not refused.known and "robots.txt disallows" in refused.fetch_error
        assert "/private/notes" not in site.paths()
        missing = explain(settings, db, site.url("/nowhere"))
        assert not missing.known and "HTTP 404" in "\n".join(render(missing))
    # the network-safety policy applies: no allow-list, no loopback
    unsafe = explain(make_settings(database_url=db.url), db, "http://127.0.0.1:9/page")
    assert not unsafe.known and "CRAWLER_PRIVATE_ALLOWLIST" in unsafe.fetch_error
    # a staged page is judged from the crawler's copy, without fetching
    with db.begin() as conn:
        staging.stage(
            db,
            conn,
            [RawDocument(url="https://staged.example/a", body=SPAM, content_type="text/plain")],
            "n1",
        )
    staged = explain(settings, db, "https://staged.example/a", fetch=False)
    assert staged.source == "staged page" and staged.parts[0].verdict.reason == "repeated_lines"


def test_explain_of_an_unknown_url_says_so(tmp_path: Path) -> None:
    result = aifactory("explain", "http://127.0.0.1:9/nothing", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown: not in the database, and it could not be fetched" in result.stdout
    offline = aifactory("explain", "https://example.org/never-seen", "--no-fetch", cwd=tmp_path)
    assert offline.returncode == 1 and "unknown" in offline.stdout
