"""The local web site a browser-tested factory crawls: enough English prose for a tokenizer and a tiny
model, one page whose title and text carry HTML/script payloads (stored XSS, if rendered as HTML), and
one the quality rules drop."""

from __future__ import annotations

import html

from aiohttp import web

from tests.collect.sites import Handler, SiteServer
from tests.text import pages

ARTICLES = 36
# A word found only on the hostile page, so a question with it retrieves that page as a RAG source.
MARKER = "zanzibarquux"
SCRIPT = "<script>window.__xss = 'script'</script>"
IMG = "<img src=x onerror=\"window.__xss = 'img'\">"


def _page(title: str, paragraphs: list[str], links: str = "") -> Handler:
    body = pages.page(title, paragraphs, extra_body=links)

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type="text/html")

    return handler


def _text(body: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type="text/plain")

    return handler


def hostile_paragraphs() -> list[str]:
    """Prose about the marker word with the payloads inside, escaped so the page shows them as text:
    the crawler stores them as the characters `<script>...`, which is what the dashboard must show."""
    payload = html.escape(f"{SCRIPT} {IMG}")
    prose = pages.varied_text(4, seed=999).split("\n\n")
    return [f"The {MARKER} festival {payload} is held every spring. {prose[0]}"] + [
        f"{text} The {MARKER} lanterns glow." for text in prose[1:]
    ]


def factory_site() -> SiteServer:
    links = "".join(f'<p><a href="/article/{n}">Article {n}</a></p>' for n in range(ARTICLES))
    routes: dict[str, Handler] = {
        "/": _page(
            "Riverton Library",
            [pages.varied_text(2, seed=1)],
            links + '<p><a href="/hostile">More</a> <a href="/spam">Offers</a></p>',
        ),
        "/hostile": _page(html.escape(f"{MARKER} {SCRIPT}{IMG}"), hostile_paragraphs()),
        "/spam": _page("Cheap watches", pages.SPAM_EN),  # dropped by the quality rules: a rejection
        "/robots.txt": _text("User-agent: *\nAllow: /\n"),
    }
    for n in range(ARTICLES):
        routes[f"/article/{n}"] = _page(f"Article {n}", pages.varied_text(6, seed=100 + n).split("\n\n"))
    return SiteServer(routes=routes)
