"""What every source shares: its HTTP client, its schedule, its shard, and the way it hands work on.

A source's unit of work has a key (a feed URL, "hn", "arxiv:<query>", "wikipedia:ja"). The node
polls a key only if the key falls in its shard (a stable hash over the sorted active collector nodes),
so two nodes never poll the same feed in the same cycle, and only when the key is due (its next poll
time is kept in the database, so a restart does not re-poll everything at once).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from dataclasses import dataclass, field

import sqlalchemy as sa

from aifactory.collect import frontier as frontier_db
from aifactory.collect.fetch import Fetcher, FetchError, Response
from aifactory.collect.urls import directory_scope, normalize_url
from aifactory.db import counters, kv
from aifactory.db.database import Database
from aifactory.db.schema import system_config
from aifactory.settings import Settings
from aifactory.text.pipeline import RawDocument

JSON_TYPES = frozenset({"application/json", "text/json", "text/plain"})
FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/xml", "text/xml", "application/rdf+xml"}
)


@dataclass
class SourceRun:
    """One cycle of the sources on one node: where to fetch from and where to put what was found."""

    settings: Settings
    db: Database
    fetcher: Fetcher
    node_id: str
    shard: tuple[int, int]  # (this node's index, number of active collector nodes)
    documents: list[RawDocument] = field(default_factory=list)  # stored through the text pipeline
    counts: dict[str, float] = field(default_factory=dict)
    min_interval: dict[str, float] = field(default_factory=dict)  # per-API pause between calls
    _last_call: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, delta: float = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + delta

    def mine(self, key: str) -> bool:
        index, count = self.shard
        return count <= 1 or zlib.crc32(key.encode()) % count == index

    async def fetch(
        self,
        api: str,
        url: str,
        types: frozenset[str],
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Response:
        """GET through the crawler's fetcher (limits, network safety), at the API's own pace."""
        gap = self.min_interval.get(api, 0.0)
        wait = self._last_call.get(api, -1e9) + gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_call[api] = time.monotonic()
        return await self.fetcher.get(
            url, types=types, etag=etag, last_modified=last_modified, follow_other_origins=True
        )

    async def fetch_json(self, api: str, url: str) -> object:
        response = await self.fetch(api, url, JSON_TYPES)
        if response.status != 200:
            raise FetchError(f"http_{response.status}", url, retry=response.status >= 500)
        try:
            return json.loads(response.body.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            raise FetchError("bad_json", url) from None

    def queue_pages(self, urls: list[str], source: str) -> int:
        """Article pages go to the crawler's frontier: politeness and robots.txt apply to them.

        Each is queued with its own directory as scope, so the crawler fetches the article and does
        not wander over the whole site it came from."""
        items = []
        for raw in urls:
            url = normalize_url(raw)
            if url is not None:
                items.append(frontier_db.NewUrl(url, 0, source, directory_scope(url)))
        if not items:
            return 0
        added, _hosts = frontier_db.queue_urls(self.db, self.settings, items)
        self.count(f"{source}_queued", added)
        return added


def is_due(db: Database, key: str) -> bool:
    with db.read() as conn:
        next_at = conn.execute(
            sa.select(system_config.c.value).where(system_config.c.key == f"source.next.{key}")
        ).scalar()
        now = db.now_value(conn)
    return next_at is None or float(next_at) <= now


def schedule(db: Database, key: str, seconds: float) -> None:
    with db.read() as conn:
        now = db.now_value(conn)
    kv.set_value(db, f"source.next.{key}", repr(now + seconds))


def remember(db: Database, key: str, value: dict) -> None:
    kv.set_value(db, f"source.state.{key}", json.dumps(value))


def recall(db: Database, key: str) -> dict:
    value = kv.get_value(db, f"source.state.{key}")
    return json.loads(value) if value else {}


def record_counts(db: Database, counts: dict[str, float]) -> None:
    """Add a cycle's source counts to the running counters (sources.<name>)."""
    counters.add(db, {f"sources.{name}": int(value) for name, value in counts.items() if value})
