"""arXiv titles and abstracts through the arXiv API (Atom), newest first.

The metadata (title, abstract) is CC0, so it is stored directly as a document; the papers themselves
are not fetched. The API asks for at least 3 seconds between calls; polls are much rarer anyway.
"""

from __future__ import annotations

from urllib.parse import urlencode

import feedparser

from aifactory.collect.fetch import FetchError
from aifactory.sources.common import FEED_TYPES, SourceRun, is_due, schedule
from aifactory.text.pipeline import RawDocument

MIN_INTERVAL_SEC = 3.0


def query_url(base: str, query: str, max_results: int) -> str:
    params = {
        "search_query": query,
        "start": 0,
        "max_results": max_results,
        "sortBy": "submittedDate",
        "sortOrder": "descending",
    }
    return f"{base}?{urlencode(params)}"


async def poll_arxiv(run: SourceRun) -> None:
    s = run.settings
    key = f"arxiv:{s.arxiv_query}"
    if not s.enable_arxiv_collector or not run.mine(key) or not is_due(run.db, key):
        return
    run.min_interval["arxiv"] = MIN_INTERVAL_SEC
    try:
        response = await run.fetch(
            "arxiv", query_url(s.arxiv_api_url, s.arxiv_query, s.arxiv_max_results), FEED_TYPES
        )
        if response.status != 200:
            raise FetchError(f"http_{response.status}", "arXiv API", retry=True)
        parsed = feedparser.parse(response.body)
        if parsed.bozo and not parsed.entries:
            raise FetchError("not_a_feed", "arXiv API")
    except FetchError as exc:
        run.count("arxiv_errors")
        run.count(f"arxiv_errors_{exc.kind}")
        schedule(run.db, key, 600.0)
        return
    for entry in parsed.entries:
        title = " ".join((entry.get("title") or "").split())
        abstract = " ".join((entry.get("summary") or "").split())
        url = entry.get("id") or entry.get("link") or ""
        if not (title and abstract and url.startswith("http")):
            continue
        run.documents.append(
            RawDocument(
                url=url,
                body=f"{title}\n\n{abstract}",
                content_type="text/plain",
                source="arxiv",
                title=title,
                published=entry.get("published"),
                license_hint="cc0-metadata",
            )
        )
        run.count("arxiv_entries")
    schedule(run.db, key, s.arxiv_poll_interval_sec)
