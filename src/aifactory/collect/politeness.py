"""Pacing: how often one site is asked for a page, and how many fetches one node runs at once.

HostGate keeps one site's pace (a site is a host, or a registrable domain with its subdomains: see
CRAWLER_POLITENESS_PER). A request starts only once the interval (CRAWLER_DOMAIN_MIN_INTERVAL_SEC, or
the site's Crawl-delay if longer, capped by CRAWLER_MAX_CRAWL_DELAY_SEC) has passed since the previous
request *ended* as well as since it started, so a slow server gets slower requests, not a queue of
them; at most CRAWLER_DOMAIN_CONCURRENCY run at once (one when a Crawl-delay is set, as Nutch does),
and errors and Retry-After defer it. Since a site is leased to one node at a time and the gate's next
start is written back when the lease ends, the interval holds across the whole cluster.
"""

from __future__ import annotations

import asyncio
import time


class HostGate:
    def __init__(self, interval: float, concurrency: int) -> None:
        self.interval = interval
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._lock = asyncio.Lock()
        self._next_start = 0.0  # monotonic time before which no request may start

    def wait_needed(self) -> float:
        """Seconds until the next request may start."""
        return max(0.0, self._next_start - time.monotonic())

    def defer(self, seconds: float) -> None:
        """Start nothing for `seconds` (Retry-After, back-off after failures)."""
        self._next_start = max(self._next_start, time.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait for a free slot and for the interval since the previous start and end; then start."""
        await self._slots.acquire()
        try:
            async with self._lock:  # one waiter at a time, so starts are spaced one by one
                # Looked at again after each sleep: a request that ended meanwhile moves the next start.
                while (delay := self._next_start - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                self._next_start = time.monotonic() + self.interval
        except BaseException:
            self._slots.release()
            raise

    def release(self) -> None:
        """A request ended: the next one waits the interval from now."""
        self._next_start = max(self._next_start, time.monotonic() + self.interval)
        self._slots.release()

    def slow_down(self, interval: float, concurrency: int) -> HostGate:
        """A gate with a longer interval (a Crawl-delay just read in the robots.txt that was the last
        request), which keeps this one's schedule and spaces the next request from that one."""
        gate = HostGate(max(self.interval, interval), concurrency)
        gate._next_start = max(self._next_start, time.monotonic() + gate.interval)
        return gate


class NodeThrottle:
    """MAX_CRAWLER_WORKERS fetches at once on this node, and CRAWLER_BATCH_SLEEP_SEC of rest after every
    batch of that many (the original's pacing, which keeps a small machine responsive)."""

    def __init__(self, workers: int, batch_sleep: float) -> None:
        self.workers = max(1, workers)
        self.batch_sleep = batch_sleep
        self._slots = asyncio.Semaphore(self.workers)
        self._started = 0
        self._resume_at = 0.0

    async def acquire(self) -> None:
        await self._slots.acquire()
        pause = self._resume_at - time.monotonic()
        if pause > 0:
            try:
                await asyncio.sleep(pause)
            except BaseException:
                self._slots.release()
                raise
        self._started += 1
        if self.batch_sleep > 0 and self._started % self.workers == 0:
            self._resume_at = time.monotonic() + self.batch_sleep

    def release(self) -> None:
        self._slots.release()


class Budget:
    """Pages this cycle may still fetch (MAX_CRAWL_PAGES_PER_CYCLE split across the collector nodes)."""

    def __init__(self, pages: int) -> None:
        self.left = pages

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        self.left += 1

    @property
    def spent(self) -> bool:
        return self.left <= 0
