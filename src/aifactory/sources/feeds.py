"""RSS/Atom feeds (RSS_FEEDS, source "rss") and news feeds (NEWS_FEEDS, source "news").

A feed is polled with the ETag/Last-Modified of the previous poll (a 304 costs the site nothing),
parsed with feedparser, and the newest entries' article pages are queued for the crawler. A feed that
is not a feed (HTML, garbage, a 500) is counted and tried again at the next poll.
"""

from __future__ import annotations

import feedparser

from aifactory.collect.fetch import FetchError
from aifactory.sources.common import FEED_TYPES, SourceRun, is_due, recall, remember, schedule

ERROR_RETRY_SEC = 300.0


def feed_groups(run: SourceRun) -> list[tuple[str, list[str], int]]:
    s = run.settings
    groups = []
    if s.enable_rss_collector:
        groups.append(("rss", s.rss_feeds, s.rss_items_per_feed))
    if s.enable_news_collector:
        groups.append(("news", s.news_feeds, s.news_items_per_feed))
    return groups


async def poll_feeds(run: SourceRun) -> None:
    for source, urls, per_feed in feed_groups(run):
        for url in urls:
            key = f"feed:{url}"
            if not run.mine(key) or not is_due(run.db, key):
                continue
            try:
                links = await poll_feed(run, url, per_feed)
            except FetchError as exc:
                run.count(f"{source}_errors")
                run.count(f"{source}_errors_{exc.kind}")
                schedule(run.db, key, ERROR_RETRY_SEC)
                continue
            run.queue_pages(links, source)
            run.count(f"{source}_polls")
            schedule(run.db, key, run.settings.source_poll_interval_sec)


async def poll_feed(run: SourceRun, url: str, limit: int) -> list[str]:
    """The article links of a feed's newest `limit` entries ([] when unchanged since last poll)."""
    state = recall(run.db, f"feed:{url}")
    response = await run.fetch(
        "feeds",
        url,
        FEED_TYPES | {"text/html", "text/plain"},
        etag=state.get("etag"),
        last_modified=state.get("last_modified"),
    )
    if response.status == 304:
        return []
    if response.status != 200:
        raise FetchError(f"http_{response.status}", url, retry=True)
    parsed = feedparser.parse(response.body)
    if not parsed.entries and (parsed.bozo or not parsed.get("feed")):
        raise FetchError("not_a_feed", url)
    remember(
        run.db,
        f"feed:{url}",
        {"etag": response.header("etag") or None, "last_modified": response.header("last-modified") or None},
    )
    links = []
    for entry in parsed.entries[:limit]:
        link = entry.get("link") or ""
        if link.startswith(("http://", "https://")):
            links.append(link)
    return links
