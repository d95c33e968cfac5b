"""The dashboard's server side: the page and its files, the live stream, the frontier and explain reads."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import httpx
import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.db import Database, events
from aifactory.db.schema import documents, training_metrics
from aifactory.web.routes.dashboard import STATIC
from tests.collect.harness import queue

ADMIN = "stream-admin-token"


def read_stream(client: httpx.Client, until: Any, headers: dict[str, str] | None = None) -> list[tuple]:
    """(event, data) messages of /api/events/stream until `until(messages)` is true (or 30 s pass)."""
    messages: list[tuple[str, Any]] = []
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            with client.stream(
                "GET", "/api/events/stream", headers={"accept": "text/event-stream", **(headers or {})}
            ) as reply:
                box["status"] = reply.status_code
                kind = "message"
                for line in reply.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        messages.append((kind, json.loads(line[5:])))
                        if until(messages):
                            return
        except httpx.HTTPError as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), f"the stream did not deliver in time: {[m[0] for m in messages]}"
    return messages


def test_the_page_and_its_files_come_from_the_factory_with_a_strict_policy(serve: Any) -> None:
    client, _ = serve()
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert page.status_code == 200 and "default-src 'self'" in policy and "unsafe" not in policy
    # Everything the page loads is one of the factory's own files: no CDN, no web font.
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert referenced and all(ref.startswith("/static/") for ref in referenced), referenced
    for path in [*referenced, "/static/panels/chat.js"]:
        reply = client.get(path)
        assert reply.status_code == 200 and "unsafe" not in reply.headers["content-security-policy"], path
    scripts = " ".join(p.read_text() for p in STATIC.rglob("*.js"))
    assert "innerHTML" not in scripts and "insertAdjacentHTML" not in scripts and "eval(" not in scripts
    # No address outside the factory in any file (the SVG namespace is a name, not a request).
    for path in (p for p in STATIC.rglob("*") if p.is_file()):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)[\w-]", path.read_text()), path


def test_the_stream_sends_state_load_new_metrics_and_new_log_lines(db: Database, serve: Any) -> None:
    client, _ = serve(dashboard_push_sec=0.2)
    first = read_stream(client, lambda m: {"hello", "state", "load"} <= {kind for kind, _ in m})
    hello = next(data for kind, data in first if kind == "hello")
    state = next(data for kind, data in first if kind == "state")
    assert hello["node_id"] == "api-node" and state["node"]["node_id"] == "api-node"
    assert {"cpu", "ram", "docs.stored"} <= set(next(d for k, d in first if k == "load"))

    def later(messages: list[tuple]) -> bool:
        if len(messages) == 3:  # hello, state, load: now something happens
            events.record(db, "a line for the dashboard", source="test", node_id="api-node")
            with db.begin() as conn:
                conn.execute(
                    training_metrics.insert().values(
                        ts=db.clock(), node_id="api-node", step=7, epoch=0.1, tokens_seen=700, train_loss=3.5
                    )
                )
        lines = [line["message"] for kind, data in messages if kind == "log" for line in data]
        return "a line for the dashboard" in lines and any(kind == "metrics" for kind, _ in messages)

    messages = read_stream(client, later)
    logs = [line for kind, data in messages if kind == "log" for line in data]
    assert any(line["message"] == "a line for the dashboard" for line in logs)
    [rows] = [data["training"] for kind, data in messages if kind == "metrics"]
    assert [(row["step"], row["train_loss"]) for row in rows] == [(7, 3.5)]
    # Without asking for a stream, one snapshot (how scripts and the API index read it).
    snapshot = client.get("/api/events/stream").json()
    assert snapshot["state"]["node"]["node_id"] == "api-node" and "cpu" in snapshot["load"]


def test_the_stream_needs_the_read_token_in_a_header(serve: Any) -> None:
    client, _ = serve(admin_api_token=ADMIN, admin_read_token="stream-read-token")
    reply = client.get("/api/events/stream", headers={"accept": "text/event-stream"})
    assert reply.status_code == 401 and "read token" in reply.json()["detail"]
    messages = read_stream(client, lambda m: len(m) >= 2, headers={"x-admin-token": "stream-read-token"})
    assert messages[0][0] == "hello"


def test_the_frontier_lists_queued_hosts_and_the_next_urls(
    db: Database, serve: Any, make_settings: Any
) -> None:
    client, _ = serve()
    settings = make_settings(database_url=db.url)
    queue(db, settings, ["http://a.example/one", "http://a.example/two", "http://b.example/"])
    body = client.get("/api/frontier", params={"limit": 2}).json()
    assert len(body["queued"]) == 2 and all(u["url"].startswith("http://") for u in body["queued"])
    full = client.get("/api/frontier").json()
    assert {u["url"] for u in full["queued"]} == {
        "http://a.example/one",
        "http://a.example/two",
        "http://b.example/",
    }
    assert {h["origin"] for h in full["hosts"] if h["has_work"]} == {"http://a.example", "http://b.example"}
    assert frontier_db.state_counts(db) == {"queued": 3}


def test_storage_says_how_big_the_database_is(serve: Any) -> None:
    client, _ = serve()
    size = client.get("/api/storage").json()["database_bytes"]
    assert isinstance(size, int) and size > 10_000  # a migrated factory database is never smaller


def test_explain_judges_what_is_stored_and_never_reads_a_local_file(db: Database, serve: Any) -> None:
    client, _ = serve()
    text = "The harbour council met on Tuesday to discuss the new ferry timetable for the island. " * 6
    with db.begin() as conn:
        conn.execute(
            documents.insert().values(
                url="https://news.example/ferry",
                domain="news.example",
                title="Ferry",
                text=text,
                char_count=len(text),
                language="en",
                source_type="web",
                content_hash=b"0123456789abcdef",
                created_at=db.clock(),
            )
        )
    body = client.get("/api/documents/explain", params={"url": "https://news.example/ferry"}).json()
    assert body["known"] and body["source"] == "stored text" and body["parts"][0]["checks"]
    assert "text" not in body["stored"][0]
    for target in ("/etc/passwd", "file:///etc/passwd", "news.example/ferry"):
        reply = client.get("/api/documents/explain", params={"url": target})
        assert reply.status_code == 422, target
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(documents)).scalar() == 1


def test_every_text_of_the_page_exists_in_english_and_japanese() -> None:
    strings = (STATIC / "strings.js").read_text()
    english, japanese = strings.split("\n  ja: {")
    keys = {
        language: set(re.findall(r"(\w+): \"", text))
        for language, text in (("en", english), ("ja", japanese))
    }
    assert keys["en"] == keys["ja"], keys["en"] ^ keys["ja"]
    used = set()
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".html"):
            used |= set(re.findall(r"""\bt\("(\w+)"|data-i18n(?:-placeholder)?="(\w+)\"""", path.read_text()))
    missing = {key for pair in used for key in pair if key} - keys["en"]
    assert not missing, missing


def test_the_db_console_link_comes_from_db_ui_url(serve: Any) -> None:
    client, _ = serve(db_ui_url="http://127.0.0.1:8080/")
    assert client.get("/api/runtime-config").json()["db_ui_url"] == "http://127.0.0.1:8080/"
