"""`aifactory crawl URL... --max-pages N`: a one-off crawl from the command line.

It uses the same crawler, database and settings as the collector engine (so robots.txt, politeness
and the network-safety rules all apply, and what it fetches is in the frontier and `pages` for the
factory to use), stays on the hosts of the given URLs, shows a progress line on stderr and prints a
summary. Ctrl-C stops it cleanly: fetches in flight are dropped and the hosts are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from aifactory.collect import frontier as frontier_db
from aifactory.collect.crawler import Crawler
from aifactory.collect.urls import default_scope, normalize_url, origin_of
from aifactory.db import Database
from aifactory.settings import Settings

MAX_IDLE_WAIT_SEC = 60.0  # wait this long at most for hosts that are backing off before giving up


@dataclass
class Progress:
    """Counters of this run, and a one-line progress display."""

    max_pages: int
    out: TextIO = sys.stderr
    counts: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    _shown_at: float = 0.0
    _width: int = 0
    _last: str = ""

    def add(self, deltas: dict[str, float]) -> None:
        self.counts.update(deltas)
        self.show()

    def show(self, *, force: bool = False) -> None:
        now = time.monotonic()
        interactive = self.out.isatty()
        if not force and now - self._shown_at < (0.25 if interactive else 5.0):
            return
        self._shown_at = now
        done = int(self.counts["attempts"])
        elapsed = max(now - self.started, 1e-6)
        filled = int(20 * min(1.0, done / max(1, self.max_pages)))
        line = (
            f"crawl [{'#' * filled}{'.' * (20 - filled)}] {done}/{self.max_pages} pages  "
            f"{done / elapsed:.1f} pages/s  ok {int(self.counts['fetched'])}  "
            f"errors {int(self.counts['errors'])}  blocked {int(self.counts['robots_blocked'])}"
        )
        if interactive:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif line != self._last:
            self.out.write(line + "\n")
        self._last = line
        self.out.flush()

    def finish(self) -> None:
        self.show(force=True)
        if self.out.isatty():
            self.out.write("\n")
            self.out.flush()


def owner_id() -> str:
    return f"cli-{socket.gethostname()[:40]}-{os.getpid()}"


async def crawl_urls(
    settings: Settings, db: Database, urls: list[str], max_pages: int, progress: Progress, *, refetch: bool
) -> None:
    seeds = [frontier_db.NewUrl(url, 0, "web", default_scope(url)) for url in urls]

    def queue() -> None:
        frontier_db.ensure_site_mode(db, settings.crawler_politeness_per)
        frontier_db.queue_urls(db, settings, seeds)
        # Start URLs that failed or were refused before are tried again (settings may have changed);
        # fetched ones only with --refetch (then conditionally: If-None-Match / If-Modified-Since).
        frontier_db.mark_due(db, urls, None if refetch else ("failed", "skipped", "blocked"))

    await asyncio.to_thread(queue)
    origins = {origin_of(url) for url in urls}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    try:
        async with Crawler(settings, db, owner_id(), on_counts=progress.add, only_origins=origins) as crawler:
            idle_since: float | None = None
            spent = 0  # fetches started (the budget), whatever their outcome
            while not stopping.is_set() and spent < max_pages:
                stats = await crawler.run(max_pages=max_pages - spent, stop=stopping.is_set)
                spent += stats.fetched
                if stats.reason != "idle":
                    idle_since = None
                    continue
                idle_since = idle_since or time.monotonic()
                wait = await asyncio.to_thread(frontier_db.next_due_in, db, origins)
                if wait is None or time.monotonic() - idle_since + wait > MAX_IDLE_WAIT_SEC:
                    break  # nothing left, or only URLs that wait too long (retries, Crawl-delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=max(0.2, wait))
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def summary(progress: Progress, states: dict[str, int], display_url: str) -> list[str]:
    c = progress.counts
    elapsed = time.monotonic() - progress.started
    fetched = int(c["fetched"])
    lines = [
        f"crawled {fetched} pages in {elapsed:.1f}s ({fetched / max(elapsed, 1e-6):.1f} pages/s), "
        f"{int(c['bytes']) / 1e6:.2f} MB received",
        f"  stored {int(c['stored'])}, not modified {int(c['not_modified'])}, "
        f"blocked by robots.txt {int(c['robots_blocked'])}, not for training {int(c['not_for_training'])}, "
        f"new URLs queued {int(c['urls_queued'])}",
    ]
    errors = {
        name[len("errors_") :]: int(v) for name, v in sorted(c.items()) if name.startswith("errors_") and v
    }
    if errors:
        lines.append("  errors: " + ", ".join(f"{kind} {count}" for kind, count in errors.items()))
    if errors.get("unsafe_address"):
        lines.append(
            "  note: URLs on loopback/private addresses are refused; to crawl a local site set "
            "CRAWLER_PRIVATE_ALLOWLIST (e.g. CRAWLER_PRIVATE_ALLOWLIST=127.0.0.1)"
        )
    if states:
        lines.append("  frontier of these hosts: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    lines.append(f"  database: {display_url}")
    return lines


def crawl_command(
    settings: Settings, db: Database, raw_urls: list[str], max_pages: int, refetch: bool
) -> int:
    """Run the one-off crawl; returns the exit status."""
    urls = []
    for raw in raw_urls:
        url = normalize_url(raw if "://" in raw else "http://" + raw)
        if url is None:
            print(f"aifactory crawl: not an http(s) URL: {raw}", file=sys.stderr)
            return 2
        urls.append(url)
    progress = Progress(max_pages)
    try:
        asyncio.run(crawl_urls(settings, db, urls, max_pages, progress, refetch=refetch))
    finally:
        progress.finish()
    states = frontier_db.state_counts(db, {origin_of(url) for url in urls})
    for line in summary(progress, states, db.display_url):
        print(line)
    if not progress.counts["attempts"] and states.get("done"):
        print("  (these URLs were crawled before; add --refetch to fetch them again)")
    return 0
