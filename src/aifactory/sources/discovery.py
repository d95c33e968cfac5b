"""Automatic discovery of new sites (ENABLE_AUTO_DISCOVERY).

Two ways in, both bounded by AUTO_DISCOVERY_SEEDS_PER_CYCLE new hosts per poll interval:
- links: hosts the frontier has never seen, linked from stored documents of quality at least
  AUTO_DISCOVERY_MIN_QUALITY; the better the linking page, the earlier its links are taken;
- search: when AUTO_DISCOVERY_SEARCH_URL is set, each of AUTO_DISCOVERY_QUERIES is sent to it and
  the first AUTO_DISCOVERY_RESULTS_PER_QUERY result URLs are queued.
Discovered pages are queued as source "discovery" and crawled like any seed: robots.txt, politeness
and the network-safety rules apply to them.
"""

from __future__ import annotations

from urllib.parse import quote

import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.collect.fetch import FetchError
from aifactory.collect.urls import normalize_url, origin_of
from aifactory.db.database import Database
from aifactory.db.schema import hosts, system_config
from aifactory.settings import Settings
from aifactory.sources.common import SourceRun, is_due, schedule
from aifactory.text.pipeline import Analyzed

WINDOW_KEY = "discovery.window"


def _reserve(db: Database, settings: Settings, wanted: int) -> int:
    """Take up to `wanted` hosts from the current window's allowance and return how many were granted
    (a negative `wanted` gives unused ones back). One write transaction with the window's row locked,
    so nodes discovering at once never overshoot the shared limit together."""
    with db.begin() as conn:
        now = db.now_value(conn)
        db.upsert(
            conn,
            system_config,
            {"key": WINDOW_KEY, "value": f"{now},0", "updated_at": now},
            ["key"],
            update=lambda _: {},
        )
        raw = conn.execute(
            sa.select(system_config.c.value).where(system_config.c.key == WINDOW_KEY).with_for_update()
        ).scalar_one()
        start, used = float(raw.split(",")[0]), int(raw.split(",")[1])
        if now - start >= settings.source_poll_interval_sec:
            start, used = now, 0
        if wanted >= 0:
            granted = max(0, min(wanted, settings.auto_discovery_seeds_per_cycle - used))
        else:
            granted = max(wanted, -used)  # giving back, never below zero used
        conn.execute(
            system_config.update()
            .where(system_config.c.key == WINDOW_KEY)
            .values(value=f"{start},{used + granted}", updated_at=now)
        )
    return granted


def discover_from_documents(db: Database, settings: Settings, docs: list[Analyzed]) -> int:
    """Queue unseen hosts linked from good documents; returns how many hosts were added."""
    if not settings.enable_auto_discovery:
        return 0
    good = sorted(
        (
            d
            for d in docs
            if d.reject_reason is None
            and d.raw.links
            and d.quality_score >= settings.auto_discovery_min_quality
        ),
        key=lambda d: d.quality_score,
        reverse=True,
    )
    candidates: dict[str, str] = {}
    for doc in good:
        for link in doc.raw.links:
            url = normalize_url(link)
            if url is not None:
                candidates.setdefault(origin_of(url), url)
    return _queue_new_hosts(db, settings, list(candidates.items()))


def _queue_new_hosts(db: Database, settings: Settings, candidates: list[tuple[str, str]]) -> int:
    if not candidates:
        return 0
    with db.read() as conn:
        known = set(
            conn.execute(
                sa.select(hosts.c.origin).where(hosts.c.origin.in_([origin for origin, _ in candidates]))
            ).scalars()
        )
    fresh = [url for origin, url in candidates if origin not in known][
        : settings.auto_discovery_seeds_per_cycle
    ]
    granted = _reserve(db, settings, len(fresh)) if fresh else 0
    if granted <= 0:
        return 0
    items = [frontier_db.NewUrl(url, 0, "discovery", origin_of(url) + "/") for url in fresh[:granted]]
    _, added_hosts = frontier_db.queue_urls(db, settings, items)
    if added_hosts < granted:  # another node queued some of them a moment ago: give the room back
        _reserve(db, settings, added_hosts - granted)
    return added_hosts


async def poll_search(run: SourceRun) -> None:
    s = run.settings
    if not (s.enable_auto_discovery and s.auto_discovery_search_url and s.auto_discovery_queries):
        return
    for query in s.auto_discovery_queries:
        key = f"search:{query}"
        if not run.mine(key) or not is_due(run.db, key):
            continue
        try:
            data = await run.fetch_json("search", s.auto_discovery_search_url.format(query=quote(query)))
        except FetchError as exc:
            run.count("discovery_errors")
            run.count(f"discovery_errors_{exc.kind}")
            schedule(run.db, key, 600.0)
            continue
        results = data.get("results", []) if isinstance(data, dict) else []
        urls = [r.get("url") for r in results if isinstance(r, dict) and isinstance(r.get("url"), str)]
        pairs = []
        for raw in urls[: s.auto_discovery_results_per_query]:
            url = normalize_url(raw)
            if url is not None:
                pairs.append((origin_of(url), url))
        run.count("discovery_hosts", _queue_new_hosts(run.db, s, pairs))
        schedule(run.db, key, s.source_poll_interval_sec)
