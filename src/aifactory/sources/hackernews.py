"""Hacker News top stories through its public API (HN_ITEMS); the linked articles go to the crawler.

Only the stories' links are used: HN's own comments are user content under HN's terms."""

from __future__ import annotations

from aifactory.collect.fetch import FetchError
from aifactory.sources.common import SourceRun, is_due, schedule

KEY = "hn"


async def poll_hacker_news(run: SourceRun) -> None:
    s = run.settings
    if not s.enable_news_collector or s.hn_items <= 0 or not run.mine(KEY) or not is_due(run.db, KEY):
        return
    base = s.hn_api_url.rstrip("/")
    try:
        ids = await run.fetch_json("hn", f"{base}/topstories.json")
        if not isinstance(ids, list):
            raise FetchError("bad_json", "topstories is not a list")
        links = []
        for item_id in ids[: s.hn_items]:
            try:
                item = await run.fetch_json("hn", f"{base}/item/{int(item_id)}.json")
            except (FetchError, ValueError, TypeError):
                run.count("hn_errors")
                continue
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                links.append(url)
    except FetchError as exc:
        run.count("hn_errors")
        run.count(f"hn_errors_{exc.kind}")
        schedule(run.db, KEY, 300.0)
        return
    run.queue_pages(links, "news")
    run.count("hn_polls")
    schedule(run.db, KEY, s.source_poll_interval_sec)
