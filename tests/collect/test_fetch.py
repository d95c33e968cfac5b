"""Bad responses: every kind is counted and skipped, and the crawl goes on."""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import subprocess
from pathlib import Path
from typing import Any

from aiohttp import web

from aifactory.collect import frontier as frontier_db
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows, page_rows
from tests.collect.sites import SiteServer, links, page, text

MAX_BODY = 1_000_000
GZIP_BOMB = gzip.compress(b" " * 50_000_000, compresslevel=9)  # 50 MB of spaces in about 50 KB
FRENCH = "Le café crème était très apprécié; à côté, une crêpe brûlée et un thé glacé. " * 40


def raw(body: bytes, content_type: str, **headers: str) -> Any:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": content_type, **headers})

    return handler


def redirect(to: str) -> Any:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(to)

    return handler


async def slow(_request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(text="too late", content_type="text/html")


async def reset(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()  # connection reset mid-request
    await asyncio.sleep(0.1)
    return web.Response(text="never sent")


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    await response.prepare(request)
    for _ in range(5 * 1024):  # 5 MB, no Content-Length
        await response.write(b"<p>" + b"x" * 1017 + b"</p>\n")
    return response


async def announced_huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.content_length = 50_000_000
    await response.prepare(request)
    await response.write(b"<p>" * 1000)
    await asyncio.sleep(5)
    return response


async def feed(request: web.Request) -> web.StreamResponse:
    item = f"http://{request.host}/feed-item"
    body = f"<rss><channel><item><title>t</title><link>{item}</link></item></channel></rss>"
    return web.Response(text=body, content_type="application/rss+xml")


async def server_error(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=500, text="boom")


def bad_site() -> dict[str, Any]:
    routes: dict[str, Any] = {
        "/slow": slow,
        "/reset": reset,
        "/bad-utf8": raw(
            b"<title>caf\xc3\xa9</title>\xff\xfe broken <a href='/ok'>ok</a>", "text/html; charset=utf-8"
        ),
        "/malformed": raw(
            b"<div><a href='/m1'>one<a href=/m2>two</span></div><table><td><a href=\"/m3\">", "text/html"
        ),
        "/gzip-bomb": raw(GZIP_BOMB, "text/html", **{"Content-Encoding": "gzip"}),
        "/endless": endless,
        "/announced-huge": announced_huge,
        "/binary": raw(b"\x89PNG\r\n\x1a\n" + os.urandom(4000), "text/html"),
        "/image": raw(b"\x89PNG\r\n\x1a\n", "image/png"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/sjis": raw(
            '<meta charset="shift_jis"><title>日本語のページ</title>'.encode("shift_jis"), "text/html"
        ),
        "/french": raw(f"<title>Café crème</title><p>{FRENCH}</p>".encode("cp1252"), "text/html"),
        "/feed": feed,
        "/error": server_error,
        "/gone": text("gone", status=404),
        "/ok": page("ok"),
        "/m1": page("m1"),
        "/m2": page("m2"),
        "/m3": page("m3"),
        "/feed-item": page("from the feed"),
    }
    for i in range(8):
        routes[f"/chain/{i}"] = redirect(f"/chain/{i + 1}")
    routes["/"] = page(links(*[path for path in routes if path.count("/") == 1 or path == "/chain/0"]))
    return routes


def test_every_bad_response_is_counted_and_skipped(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(
        make_settings,
        crawler_read_timeout_sec=0.5,
        crawler_total_timeout_sec=2.0,
        crawler_max_body_bytes=MAX_BODY,
        crawler_max_attempts=2,
        crawler_retry_base_sec=0.1,
    )
    with SiteServer(bad_site()) as site:
        counts = crawl(db, settings, [site.url("/")], time_limit=40)
    state = {
        url.removeprefix(site.origin): (row["state"], row["error"]) for url, row in frontier_rows(db).items()
    }
    assert state["/slow"] == ("failed", "timeout")
    assert state["/reset"] == ("failed", "reset")
    assert state["/gzip-bomb"] == ("skipped", "too_large")
    assert state["/endless"] == ("skipped", "too_large")
    assert state["/announced-huge"] == ("skipped", "too_large")
    assert state["/binary"] == ("skipped", "binary")
    assert state["/image"] == ("skipped", "content_type")
    assert state["/loop-a"] == state["/loop-b"] == ("skipped", "redirect_loop")
    assert state["/chain/0"] == ("skipped", "too_many_redirects")
    assert state["/error"] == ("failed", "http_5xx")
    assert state["/gone"] == ("failed", "http_4xx")
    expected = {"timeout": 2, "reset": 2, "too_large": 3, "binary": 1, "content_type": 1, "redirect_loop": 2,
                "too_many_redirects": 1, "http_5xx": 2, "http_4xx": 1}  # fmt: skip
    for kind, n in expected.items():  # timeouts, resets and 5xx were tried twice (CRAWLER_MAX_ATTEMPTS)
        assert counts[f"errors_{kind}"] == n, kind
    # A gzip bomb and endless bodies are cut off: far less than their size was downloaded.
    assert counts["bytes"] < 20 * MAX_BODY
    # Broken pages still give their text and links.
    stored = {url.removeprefix(site.origin): row for url, row in page_rows(db).items()}
    assert stored["/bad-utf8"]["title"] == "café"
    assert {"/ok", "/m1", "/m2", "/m3", "/feed-item"} <= set(state)
    assert stored["/sjis"]["title"] == "日本語のページ" and stored["/sjis"]["charset"] == "shift_jis"
    assert stored["/french"]["title"] == "Café crème"
    assert state["/ok"] == ("done", None)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_a_tls_error_is_counted(db: Database, make_settings: Any, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = SiteServer({"/": page("self-signed")}, ssl_context=context)
    url = f"https://127.0.0.1:{site.port}/"
    with site:
        # With robots.txt on, the site is unreachable (its robots.txt too): deferred, nothing fetched.
        counts = crawl(db, crawl_settings(make_settings), [url], until_settled=False, idle_grace=0.2)
        assert counts["errors_robots_unreachable"] == 1 and counts["attempts"] == 0
        settings = crawl_settings(make_settings, crawler_max_attempts=1, crawler_respect_robots=False)
        frontier_db.mark_due(db, [url])
        counts = crawl(db, settings, until_settled=False)
    assert counts["errors_tls"] == 1
    assert frontier_rows(db)[url]["state"] == "failed"


def test_refetches_are_conditional(db: Database, make_settings: Any) -> None:
    async def versioned(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304)
        return web.Response(text="<p>v1</p>", content_type="text/html", headers={"ETag": '"v1"'})

    settings = crawl_settings(make_settings)
    with SiteServer({"/": versioned}) as site:
        crawl(db, settings, [site.url("/")])
        frontier_db.mark_due(db, [site.url("/")])
        counts = crawl(db, settings)
        first, second = site.hits_for("/")
    assert "If-None-Match" not in first.headers
    assert second.headers["If-None-Match"] == '"v1"'
    assert counts["not_modified"] == 1
    assert frontier_rows(db)[site.url("/")]["state"] == "done"
