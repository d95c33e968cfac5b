"""Local stand-ins for the outside APIs and sites the sources talk to, served on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.collect.sites import Handler, SiteServer
from tests.text import pages

ARTICLES = {
    "/news/park": ("Council approves park plan", pages.NEWS_EN, "en"),
    "/news/park-ja": ("公園整備計画を可決", pages.NEWS_JA, "ja"),
    "/blog/sourdough": ("Sourdough help", pages.FORUM_EN, "en"),
    "/wiki/kingfisher": ("Kingfisher", pages.WIKI_EN, "en"),
}


def article(path: str) -> Handler:
    title, paragraphs, lang = ARTICLES[path]

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=pages.page(title, paragraphs, lang=lang), content_type="text/html")

    return handler


def rss(origin: str, paths: list[str]) -> str:
    items = "".join(
        f"<item><title>{ARTICLES[p][0]}</title><link>{origin}{p}</link><description>d</description></item>"
        for p in paths
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed</title>{items}</channel></rss>'


def atom(origin: str, paths: list[str]) -> str:
    entries = "".join(
        f'<entry><title>{ARTICLES[p][0]}</title><link href="{origin}{p}"/><id>{origin}{p}</id>'
        f"<updated>2024-03-12T00:00:00Z</updated></entry>"
        for p in paths
    )
    return f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>{entries}</feed>'


def feed(body_for: Any, content_type: str, etag: str = '"v1"') -> Handler:
    """A feed that honours If-None-Match, as a well-run site does."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=body_for(), content_type=content_type, headers={"ETag": etag})

    return handler


WIKI = {
    "en": {"Kingfisher": (pages.WIKI_EN, ["Heron", "River"]), "Heron": (pages.FORUM_EN, [])},
    "ja": {"カワセミ": (pages.WIKI_JA, ["サギ"]), "サギ": (pages.NEWS_JA, [])},
}


def mediawiki() -> Handler:
    """The parts of the MediaWiki API the Wikipedia source uses: list=random and prop=extracts."""

    async def handler(request: web.Request) -> web.StreamResponse:
        lang = request.match_info.get("tail", "").split("/", 1)[0] or request.path.split("/")[1]
        articles = WIKI[lang]
        query = request.query
        if query.get("list") == "random":
            first = next(iter(articles))
            return web.json_response({"query": {"random": [{"id": 1, "ns": 0, "title": first}]}})
        title = query.get("titles", "")
        if title not in articles:
            return web.json_response({"query": {"pages": [{"title": title, "missing": True}]}})
        paragraphs, links = articles[title]
        page = {
            "title": title,
            "extract": "\n\n".join(paragraphs),
            "fullurl": f"https://{lang}.wikipedia.org/wiki/{title}",
            "links": [{"ns": 0, "title": t} for t in links],
        }
        return web.json_response({"query": {"pages": [page]}})

    return handler


def hacker_news(origin: str) -> dict[str, Handler]:
    ids = [101, 102, 103]
    items = {
        101: {"id": 101, "type": "story", "title": "Park", "url": f"{origin}/news/park"},
        102: {"id": 102, "type": "story", "title": "Ask HN: anything", "text": "a self post"},
        103: {"id": 103, "type": "story", "title": "Sourdough", "url": f"{origin}/blog/sourdough"},
    }

    def json_handler(data: object) -> Handler:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(text=json.dumps(data), content_type="application/json")

        return handler

    routes = {"/v0/topstories.json": json_handler(ids)}
    routes |= {f"/v0/item/{i}.json": json_handler(item) for i, item in items.items()}
    return routes


ARXIV_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
<title>arXiv Query</title>
<entry><id>http://arxiv.org/abs/2401.00001v1</id><published>2024-01-01T00:00:00Z</published>
<title>Small Language Models Trained Continuously on Web Text</title>
<summary>We study small language models that are trained without end on a corpus that grows every
hour. We describe how the validation split is kept fixed, how checkpoints are saved atomically and
how the learning rate schedule is chosen so that training can continue for weeks without restarts.
Experiments on two languages show that the loss keeps falling as new documents arrive.</summary>
<author><name>A. Author</name></author></entry>
<entry><id>http://arxiv.org/abs/2401.00002v1</id><published>2024-01-02T00:00:00Z</published>
<title>Deduplicating Crawled Text With MinHash</title>
<summary>Near-duplicate documents waste training compute and encourage memorisation. We measure how
MinHash signatures with locality sensitive hashing find syndicated copies of news articles across
sites, and we report the precision and recall of several band configurations on a corpus collected
by a polite crawler over one month of continuous operation.</summary>
<author><name>B. Author</name></author></entry>
</feed>"""


def arxiv() -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query.get("sortBy") == "submittedDate"
        return web.Response(text=ARXIV_FEED, content_type="application/atom+xml")

    return handler


def stand_in_site() -> SiteServer:
    """One server playing every outside party: articles, feeds, MediaWiki, HN and arXiv."""
    server = SiteServer()
    origin = server.origin
    routes: dict[str, Handler] = {path: article(path) for path in ARTICLES}
    routes["/feeds/rss.xml"] = feed(
        lambda: rss(origin, ["/news/park", "/blog/sourdough"]), "application/rss+xml"
    )
    routes["/feeds/atom.xml"] = feed(lambda: atom(origin, ["/news/park-ja"]), "application/atom+xml")
    routes["/feeds/not-a-feed"] = article("/wiki/kingfisher")
    routes["/feeds/broken"] = _status(500)
    routes["/en/w/api.php"] = mediawiki()
    routes["/ja/w/api.php"] = mediawiki()
    routes |= hacker_news(origin)
    routes["/arxiv/api/query"] = arxiv()
    routes["/search"] = _search(origin)
    routes["/docs/guide/"] = _docs_index()
    routes["/docs/guide/config"] = _docs_page()
    server.routes = routes
    return server


def _status(code: int) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text="server error")

    return handler


def _search(origin: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        results = [
            {"url": "http://127.0.0.2:1/found", "title": request.query.get("q", "")},
            {"url": f"{origin}/wiki/kingfisher"},
        ]
        return web.json_response({"results": results})

    return handler


def _docs_index() -> Handler:
    links = '<p><a href="/docs/guide/config">Configuration</a> <a href="/news/park">News</a></p>'

    async def handler(_request: web.Request) -> web.StreamResponse:
        text = pages.page("Guide", pages.DOCS_EN[:1], header="App Docs", extra_body=links)
        return web.Response(text=text, content_type="text/html")

    return handler


def _docs_page() -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=pages.docs_page(), content_type="text/html")

    return handler
