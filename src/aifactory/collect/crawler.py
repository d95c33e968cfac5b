"""The crawl loop of one node: lease sites, fetch their due URLs politely, hand pages on, give sites back.

    run(max_pages)
      claim sites (database lease with a fencing token) --> one task per site:
          for each origin of the site with work:
              robots.txt (+ tdmrep.json): parsed copy in memory, or the shared cache, or fetched
              loop: due URLs -> for each: robots check, HostGate (the site's pace), NodeThrottle,
                    fetch, classify -> ResultWriter (batched transaction: page to the sink, URL
                    marked, links queued; refused if the lease was taken over)
          give the site back (ready again after its interval, back-off or Retry-After)
      a renewal task extends the leases every lease/3 s; a site whose lease cannot be renewed stops
      fetching at once, and its fetches in flight are cancelled before the lease can have run out

Nothing here can end the crawl because of one page: every fetch ends as a counted outcome. What does
end it is the database staying away (the writer fails): `run` then raises, the engine ends, and the
supervisor restarts it once the database is back; everything not stored is still queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from aifactory.autotune import resolve_profile
from aifactory.collect import frontier as frontier_db
from aifactory.collect import robots as robots_rules
from aifactory.collect.decode import decode_body
from aifactory.collect.fetch import Fetcher, FetchError, Response
from aifactory.collect.politeness import Budget, HostGate, NodeThrottle
from aifactory.collect.safety import ALLOWLIST_HINT
from aifactory.collect.sink import FetchedPage, PageSink, PageStore
from aifactory.collect.urls import default_scope, directory_scope, in_scope
from aifactory.collect.writer import Result, ResultWriter, Store, WriterFailed, store
from aifactory.db import Database, retry
from aifactory.settings import Settings

log = logging.getLogger("aifactory.crawl")

MAX_HOLD_SEC = 5.0  # a site that must wait longer than this is given back instead of held idle
CLAIM_EVERY_SEC = 0.5  # how often a node with free capacity looks for more sites
IDLE_GRACE_SEC = 1.0  # no work for this long ends a run (the engine then polls again)
LEASE_SAFETY = 0.8  # of the lease: after this long without a renewal the site is left, fetches cancelled
RETRY_STATUSES = (429, 503)
UNSAFE = -1  # _fetch_small: the address is not one we may fetch from
# Failures of the host itself, not of one URL: the whole site backs off, and after CRAWLER_MAX_ATTEMPTS
# of them in a row the origin is given up (its queued URLs failed), instead of lingering URL by URL.
HOST_KINDS = frozenset({"dns", "tls", "connect"})


@dataclass
class RunStats:
    fetched: int = 0
    hosts: int = 0
    seconds: float = 0.0
    reason: str = ""  # budget | idle | stopped


@dataclass
class OriginWork:
    """One origin of a leased site, as its site task works through it."""

    info: frontier_db.OriginState
    rules: robots_rules.Robots | None = None
    tdmrep: str = ""
    new_pages: int = 0  # first fetches started under this lease (for the host's page budget)

    @property
    def origin(self) -> str:
        return self.info.origin


@dataclass
class SiteState:
    """A leased site as its task sees it."""

    lease: frontier_db.SiteLease
    gate: HostGate
    deadline: float  # monotonic time until which the lease surely holds (pushed by each renewal)
    origins: list[OriginWork]
    error_streak: int = 0
    lost: bool = False  # taken over by another node: stop at once, write nothing more
    stalled: bool = False  # a renewal failed: start nothing more
    give_back: bool = False  # back-off too long to wait for while holding the lease
    give_up: dict[str, str] = field(default_factory=dict)  # origins found dead -> why
    started: set[int] = field(default_factory=set)  # URLs fetched (or fetching) whose result is unwritten
    unflushed: set[int] = field(default_factory=set)  # URLs handed to the writer since the last flush
    in_flight: set[asyncio.Task] = field(default_factory=set)

    @property
    def site(self) -> str:
        return self.lease.site


def retry_after_seconds(value: str) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    value = value.strip()[:64]
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Crawler:
    """One node's crawler. Use as `async with Crawler(...) as crawler: await crawler.run(...)`."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        owner: str,
        *,
        sink: PageSink | None = None,
        on_counts: Callable[[dict[str, float]], None] | None = None,
        only_origins: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.owner = owner
        self.sink = sink or PageStore(db)
        self.on_counts = on_counts or (lambda counts: None)
        self.only_origins = only_origins
        self.workers = resolve_profile(settings).max_crawler_workers
        self.max_hosts = 4 * self.workers  # a polite site keeps a slot busy only part of the time
        self.fetcher = Fetcher(settings, max_connections=self.workers)
        self.hosts: dict[str, SiteState] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.robots_cache = robots_rules.RobotsCache()
        self.unsafe_refused = 0
        self._warned_unsafe = False
        self._db_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="crawl-db")
        self._stop_db = threading.Event()  # ends database retries at once when the crawler closes
        self._throttle: NodeThrottle | None = None
        self._writer: ResultWriter | None = None
        self._renewer: asyncio.Task | None = None
        self._budget = Budget(0)
        self._stopping = False

    # --- set-up and tear-down ---------------------------------------------------------------------
    async def __aenter__(self) -> Crawler:
        await self.fetcher.__aenter__()
        self._throttle = NodeThrottle(self.workers, self.settings.crawler_batch_sleep_sec)
        target = Store(self.db, self.sink, self.settings, self.owner, stop=self._stop_db)
        self._writer = ResultWriter(functools.partial(store, target), self._db, self._count)
        self._writer.start()
        try:
            await self.call_db(frontier_db.release_all, self.db, self.owner)  # leases of an earlier life
        except BaseException:
            await self.__aexit__()
            raise
        self._renewer = asyncio.create_task(self._renew_forever(), name="crawl-renewer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop: cancel the fetches, store what can be stored, give the leases back; bounded in time
        even when the database is away (the leases then simply expire)."""
        s = self.settings
        try:
            await self._end_tasks(cancel=True)
            if self._renewer is not None:
                self._renewer.cancel()
                await asyncio.gather(self._renewer, return_exceptions=True)
            if self._writer is not None:
                await self._writer.close(timeout=s.crawler_db_retry_sec)
            self._stop_db.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._db(frontier_db.release_all, self.db, self.owner), 10.0)
        finally:
            self._stop_db.set()
            await self.fetcher.__aexit__()
            self._db_pool.shutdown(wait=False, cancel_futures=True)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking database call on the crawler's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))

    async def call_db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A database call on the crawler's threads, retried while the database is transiently away;
        raises DatabaseUnavailable after CRAWLER_DB_RETRY_SEC."""
        budget = self.settings.crawler_db_retry_sec
        return await self._db(retry.call, fn, *args, budget=budget, stop=self._stop_db, **kwargs)

    def _count(self, counts: dict[str, float]) -> None:
        """Report counts to the caller; a failure to report is logged, never raised into the crawl."""
        self.unsafe_refused += int(counts.get("errors_unsafe_address", 0))
        try:
            self.on_counts(counts)
        except Exception:
            log.exception("could not report crawl counts")

    # --- the run loop ------------------------------------------------------------------------------
    async def run(
        self,
        *,
        max_pages: int,
        stop: Callable[[], bool],
        shard: tuple[int, int] | None = None,
        idle_grace: float = IDLE_GRACE_SEC,
    ) -> RunStats:
        """Crawl until `max_pages` fetches, until no site has due work for `idle_grace` seconds, or
        until `stop()`; every lease taken is given back before returning. Raises WriterFailed (or
        DatabaseUnavailable) when the database stays away."""
        assert self._writer is not None
        s = self.settings
        self._budget = Budget(max_pages)
        self._stopping = False
        stats = RunStats()
        started = time.monotonic()
        last_claim = 0.0
        idle_since: float | None = None
        try:
            while True:
                self._writer.check()
                now = time.monotonic()
                if stop():
                    stats.reason = "stopped"
                    self._stopping = True
                    break
                if self._budget.spent:
                    stats.reason = "budget"
                    break
                self._leave_expired(now)
                free = self.max_hosts - len(self.tasks)
                if free > 0 and now - last_claim >= CLAIM_EVERY_SEC:
                    last_claim = now
                    claimed_at = time.monotonic()
                    leases = await self.call_db(
                        frontier_db.claim_sites,
                        self.db,
                        self.owner,
                        limit=free,
                        lease_sec=s.crawler_lease_sec,
                        shard=shard,
                        steal_after=s.crawler_lease_sec,
                        only_origins=self.only_origins,
                        per=s.crawler_politeness_per,
                    )
                    for lease in leases:
                        self._start_site(lease, claimed_at + s.crawler_lease_sec * LEASE_SAFETY)
                    stats.hosts += len(leases)
                if self.tasks:
                    idle_since = None
                else:
                    idle_since = idle_since or now
                    if now - idle_since >= idle_grace:
                        stats.reason = "idle"
                        break
                if self.tasks:
                    await asyncio.wait(list(self.tasks.values()), timeout=0.2)
                else:
                    await asyncio.sleep(0.1)
        except BaseException:
            self._stopping = True
            raise
        finally:
            await self._end_tasks(cancel=self._stopping)
        self._writer.check()
        stats.fetched = max_pages - max(0, self._budget.left)
        stats.seconds = time.monotonic() - started
        return stats

    def _start_site(self, lease: frontier_db.SiteLease, deadline: float) -> None:
        state = SiteState(
            lease=lease,
            gate=self._gate([origin.crawl_delay for origin in lease.origins]),
            deadline=deadline,
            origins=[OriginWork(info) for info in lease.origins],
            error_streak=lease.error_streak,
        )
        self.hosts[lease.site] = state
        task = asyncio.create_task(self._site_main(state), name=f"site {lease.site}")
        self.tasks[lease.site] = task
        task.add_done_callback(lambda done, site=lease.site: self._site_done(site, done))

    def _gate(self, delays: list[float | None]) -> HostGate:
        s = self.settings
        delay = min(max((d or 0.0 for d in delays), default=0.0), s.crawler_max_crawl_delay_sec)
        return HostGate(
            max(s.crawler_domain_min_interval_sec, delay), 1 if delay else s.crawler_domain_concurrency
        )

    def _site_done(self, site: str, task: asyncio.Task) -> None:
        if self.tasks.get(site) is task:  # not a newer lease of the site, claimed as this one ended
            del self.tasks[site]
            self.hosts.pop(site, None)

    def _leave_expired(self, now: float) -> None:
        """A site whose lease may have run out (no renewal got through in time) is left at once:
        another node may hold it already, and two nodes must never fetch one site together."""
        for state in list(self.hosts.values()):
            if now >= state.deadline and not state.lost:
                log.warning("lease on %s could not be renewed in time; leaving the site", state.site)
                self._lose(state)

    def _lose(self, state: SiteState) -> None:
        state.lost = True
        for task in state.in_flight:
            task.cancel()

    async def _end_tasks(self, *, cancel: bool) -> None:
        """Wind the site tasks down: cancel them (stop) or let them finish their fetches (budget).
        Bounded: fetches end within CRAWLER_TOTAL_TIMEOUT_SEC, and leases are left at their deadline."""
        tasks = list(self.tasks.values())
        if cancel:
            for task in tasks:
                task.cancel()  # the site task gives its site back all the same (see _site_main)
        bound = (
            time.monotonic()
            + self.settings.crawler_total_timeout_sec
            + self.settings.crawler_db_retry_sec
            + 30
        )
        while tasks:
            _done, pending = await asyncio.wait(tasks, timeout=0.5)
            tasks = list(pending)
            self._leave_expired(time.monotonic())
            if tasks and time.monotonic() > bound:
                log.error("%d site tasks did not end in time; abandoning them", len(tasks))
                for task in tasks:
                    task.cancel()
                break

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.crawler_lease_sec / 3)
            await self._renew()

    async def _renew(self) -> None:
        states = {site: state for site, state in self.hosts.items() if not state.lost}
        if not states:
            return
        started = time.monotonic()
        tokens = {site: state.lease.token for site, state in states.items()}
        try:
            held = await asyncio.wait_for(
                self._db(
                    frontier_db.renew_leases, self.db, self.owner, tokens, self.settings.crawler_lease_sec
                ),
                timeout=self.settings.crawler_lease_sec / 3,
            )
        except Exception as exc:  # the database is away: start nothing more on any site until it is back
            log.warning(
                "could not renew %d site leases (%s); those sites start nothing more", len(states), exc
            )
            for state in states.values():
                state.stalled = True
            return
        deadline = started + self.settings.crawler_lease_sec * LEASE_SAFETY
        for site, state in states.items():
            if site in held:
                state.deadline = deadline
            else:
                log.warning("lease on %s was taken over; leaving the site", site)
                self._lose(state)

    def _winding_down(self, state: SiteState) -> bool:
        return (
            self._stopping
            or state.lost
            or state.stalled
            or state.give_back
            or self._budget.spent
            or time.monotonic() >= state.deadline
        )

    # --- one site ------------------------------------------------------------------------------------
    async def _site_main(self, state: SiteState) -> None:
        assert self._writer is not None
        try:
            for work in state.origins:
                if self._winding_down(state):
                    break
                if state.give_up.get(work.origin):
                    continue
                if await self._load_robots(state, work):
                    await self._crawl_origin(state, work)
        except asyncio.CancelledError:
            pass  # stopping: what was not stored stays queued
        except WriterFailed:
            pass  # the run loop ends the crawl
        except Exception:
            log.exception("site %s failed; giving it back", state.site)
            state.error_streak += 1  # and backing off: a site that fails its task is not retried at once
            state.gate.defer(self._backoff(state.error_streak))
        finally:
            if state.in_flight:
                for task in state.in_flight:
                    task.cancel()
                await asyncio.gather(*state.in_flight, return_exceptions=True)
            await asyncio.shield(self._give_back(state))

    async def _crawl_origin(self, state: SiteState, work: OriginWork) -> None:
        """Keep the site's fetch slots busy: the next due URLs are read while the last ones are still
        being fetched, and a batch never waits for its slowest fetch before the next one starts."""
        s = self.settings
        size = max(16, 8 * s.crawler_domain_concurrency)
        while not self._winding_down(state):
            if len(state.unflushed) > 4 * size:
                await self._flush(state)
            budget_spent = work.info.pages_fetched + work.new_pages >= s.crawler_max_pages_per_host
            rows = await self.call_db(
                frontier_db.due_urls,
                self.db,
                work.origin,
                size + len(state.started),
                refetch_only=budget_spent,
            )
            # URLs started under this lease whose results are not written yet still look queued.
            batch = [due for due in rows if due.url_hash not in state.started][:size]
            if batch:
                await self._fetch_batch(state, work, batch)
            elif state.in_flight:
                await asyncio.wait(list(state.in_flight), return_when=asyncio.FIRST_COMPLETED)
            elif state.unflushed:
                await self._flush(state)  # then look again: their pages may have added links
            else:
                break
        if state.in_flight and not state.lost:  # let the fetches started finish (stop cancels them)
            await asyncio.gather(*list(state.in_flight), return_exceptions=True)

    async def _flush(self, state: SiteState) -> None:
        assert self._writer is not None
        written = set(state.unflushed)
        await self._writer.flush(timeout=self._flush_timeout())
        state.unflushed -= written
        state.started -= written

    def _flush_timeout(self) -> float:
        return self.settings.crawler_db_retry_sec + 30.0

    async def _give_back(self, state: SiteState) -> None:
        assert self._writer is not None
        s = self.settings
        try:
            await self._writer.flush(timeout=self._flush_timeout())
            if state.lost:
                return
            await self.call_db(
                frontier_db.release_site,
                self.db,
                self.owner,
                state.site,
                state.lease.token,
                ready_in=state.gate.wait_needed(),
                error_streak=state.error_streak,
                max_pages_per_host=s.crawler_max_pages_per_host,
                give_up=state.give_up,
            )
            if state.give_up:
                self._count({"hosts_given_up": len(state.give_up)})
        except Exception as exc:  # the lease then simply expires
            log.warning("could not give back %s: %s", state.site, exc)

    def _backoff(self, streak: int) -> float:
        s = self.settings
        return min(s.crawler_max_backoff_sec, s.crawler_retry_base_sec * 2 ** max(0, streak - 1))

    async def _fetch_batch(self, state: SiteState, work: OriginWork, batch: list[frontier_db.DueUrl]) -> None:
        assert self._writer is not None
        s = self.settings
        for due in batch:
            if self._winding_down(state):
                break
            if work.rules is not None and not work.rules.allows(due.url, s.crawler_user_agent):
                state.started.add(due.url_hash)
                state.unflushed.add(due.url_hash)
                await self._writer.put(self._blocked(state, work, due))
                continue
            if state.gate.wait_needed() > MAX_HOLD_SEC:
                state.give_back = True
                break
            if not due.fetched_before:
                if work.info.pages_fetched + work.new_pages >= s.crawler_max_pages_per_host:
                    continue  # CRAWLER_MAX_PAGES_PER_HOST: only refetches from now on
                work.new_pages += 1
            await state.gate.acquire()
            if self._winding_down(state) or not self._budget.take():
                state.gate.release()
                work.new_pages -= 0 if due.fetched_before else 1
                break
            state.started.add(due.url_hash)
            task = asyncio.create_task(self._fetch_one(state, work, due))
            state.in_flight.add(task)
            task.add_done_callback(state.in_flight.discard)

    @property
    def fetching(self) -> int:
        """Fetches in flight now, over every site this crawler holds (the dashboard's active fetchers)."""
        return sum(len(state.in_flight) for state in self.hosts.values())

    def _result(
        self, state: SiteState, work: OriginWork, outcome: frontier_db.UrlOutcome, **kw: Any
    ) -> Result:
        return Result(outcome, work.origin, site=state.site, token=state.lease.token, **kw)

    def _blocked(self, state: SiteState, work: OriginWork, due: frontier_db.DueUrl) -> Result:
        outcome = frontier_db.UrlOutcome(due.url_hash, "blocked", due.attempts, error="robots", fetched=False)
        return self._result(state, work, outcome, counts={"robots_blocked": 1})

    async def _fetch_one(self, state: SiteState, work: OriginWork, due: frontier_db.DueUrl) -> None:
        """Fetch one URL (its site slot is already held) and queue the result for the writer."""
        assert self._throttle is not None and self._writer is not None
        try:
            await self._throttle.acquire()
            try:
                result = await self._fetch_and_classify(state, work, due)
            finally:
                self._throttle.release()
        except asyncio.CancelledError:
            self._budget.give_back()
            work.new_pages -= 0 if due.fetched_before else 1
            state.started.discard(due.url_hash)
            raise
        except Exception:  # a bug on one page must not end the crawl: count it and go on
            log.exception("unexpected error fetching %s", due.url)
            outcome = frontier_db.UrlOutcome(due.url_hash, "failed", due.attempts + 1, error="internal")
            result = self._result(state, work, outcome, counts={"errors": 1, "errors_internal": 1})
        finally:
            state.gate.release()
        result.counts["attempts"] = 1  # one page of the cycle's budget, whatever came of it
        result.new_page = not due.fetched_before  # and of the host's page budget
        state.unflushed.add(due.url_hash)
        await self._writer.put(result)

    async def _fetch_and_classify(
        self, state: SiteState, work: OriginWork, due: frontier_db.DueUrl
    ) -> Result:
        s = self.settings
        started = time.monotonic()
        try:
            response = await self.fetcher.get(
                due.url,
                etag=due.etag,
                last_modified=due.last_modified,
                may_fetch=lambda url: work.rules is None or work.rules.allows(url, s.crawler_user_agent),
            )
        except FetchError as exc:
            return self._failure(state, work, due, exc.kind, retry=exc.retry, detail=exc.detail)
        counts: dict[str, float] = {"requests": 1, "bytes": response.wire_bytes}
        if response.status in RETRY_STATUSES:
            wait = retry_after_seconds(response.header("retry-after"))
            return self._failure(
                state, work, due, f"http_{response.status}", retry=True, wait=wait, status=response.status
            )
        if response.status >= 500:
            return self._failure(state, work, due, "http_5xx", retry=True, status=response.status)
        state.error_streak = 0
        if response.redirect_to is not None:  # to another host: queue it there (its robots, its pace)
            target = response.redirect_to
            outcome = frontier_db.UrlOutcome(due.url_hash, "done", 0, response.status, "redirect")
            scope = due.scope
            if not in_scope(target, scope, allow_subdomains=s.crawler_allow_subdomains) and due.depth == 0:
                # A seed that moved (example.com -> www.example.com): the crawl follows it to its new site.
                scope = directory_scope(target) if due.source == "docs" else default_scope(target)
            new_urls = []
            if in_scope(target, scope, allow_subdomains=s.crawler_allow_subdomains):
                new_urls.append(frontier_db.NewUrl(target, due.depth, due.source, scope))
            return self._result(state, work, outcome, new_urls=new_urls, counts={**counts, "redirects": 1})
        if response.status == 304:
            outcome = frontier_db.UrlOutcome(
                due.url_hash, "done", 0, 304, None, due.etag, due.last_modified, next_in=self._refetch_in()
            )
            return self._result(state, work, outcome, counts={**counts, "not_modified": 1})
        if response.status != 200:
            kind = "http_4xx" if 400 <= response.status < 500 else "http_other"
            outcome = frontier_db.UrlOutcome(due.url_hash, "failed", due.attempts + 1, response.status, kind)
            return self._result(state, work, outcome, counts={**counts, "errors": 1, f"errors_{kind}": 1})
        page = self._page(state, work, due, response)
        outcome = frontier_db.UrlOutcome(  # a success: the failures counted so far are forgiven
            due.url_hash,
            "done",
            0,
            200,
            None,
            response.header("etag") or None,
            response.header("last-modified") or None,
            next_in=self._refetch_in(),
        )
        counts.update(fetched=1, fetch_seconds=time.monotonic() - started)
        return self._result(
            state,
            work,
            outcome,
            page=page,
            depth=due.depth,
            source=due.source,
            scope=due.scope,
            counts=counts,
        )

    def _refetch_in(self) -> float | None:
        return self.settings.crawler_recrawl_sec or None

    def _page(
        self, state: SiteState, work: OriginWork, due: frontier_db.DueUrl, response: Response
    ) -> FetchedPage:
        try:
            text, charset = decode_body(response.body, response.charset)
        except (LookupError, ValueError, TypeError):  # a charset label naming a non-text codec
            text, charset = response.body.decode("utf-8", errors="replace"), "utf-8"
        page = FetchedPage(
            url=due.url,
            final_url=response.final_url,
            url_hash=due.url_hash,
            origin=work.origin,
            source=due.source,
            depth=due.depth,
            status=response.status,
            headers=response.headers,
            body=response.body,
            text=text,
            mime=response.mime,
            charset=charset,
            node_id=self.owner,
        )
        if self.settings.crawler_respect_robots:
            token = self.settings.crawler_user_agent
            reasons = robots_rules.header_optouts(response.headers, token)
            if work.rules is not None:
                reason = work.rules.ai_optout(due.url)
                if reason:
                    reasons.append(reason)
            if robots_rules.tdm_reserved(work.tdmrep, due.url):
                reasons.append("tdmrep.json reservation")
            page.optout_reasons = reasons
            page.train_allowed = not reasons
        return page

    def _failure(
        self,
        state: SiteState,
        work: OriginWork,
        due: frontier_db.DueUrl,
        kind: str,
        *,
        retry: bool,
        detail: str = "",
        wait: float | None = None,
        status: int | None = None,
    ) -> Result:
        """A failed fetch: retried later with exponential back-off (URL and site), or given up."""
        s = self.settings
        attempts = due.attempts + 1
        counts = {"errors": 1, f"errors_{kind}": 1, "requests": 0 if kind == "unsafe_address" else 1}
        if kind == "unsafe_address" and not self._warned_unsafe:
            self._warned_unsafe = True
            log.warning("%s: %s (%s)", due.url, detail or "unsafe address", ALLOWLIST_HINT)
        log.debug("%s: %s %s", due.url, kind, detail)
        if kind in HOST_KINDS:  # the host, not the URL: the site backs off; the URL keeps its attempts
            state.error_streak += 1
            backoff = self._backoff(state.error_streak)
            state.gate.defer(backoff)
            state.give_back = True
            if state.error_streak >= s.crawler_max_attempts:
                state.give_up[work.origin] = kind
                outcome = frontier_db.UrlOutcome(due.url_hash, "failed", attempts, status, kind)
            else:
                outcome = frontier_db.UrlOutcome(
                    due.url_hash, "queued", due.attempts, status, kind, next_in=backoff
                )
            return self._result(state, work, outcome, counts=counts)
        if retry:
            state.error_streak += 1
            backoff = self._backoff(state.error_streak)
            if wait is not None:  # Retry-After: the server said how long; capped so no site parks us forever
                backoff = min(s.crawler_max_backoff_sec, max(wait, 0.0))
            state.gate.defer(backoff)
        if not retry or attempts >= s.crawler_max_attempts:
            state_name = "skipped" if kind in SKIP_KINDS else "failed"
            outcome = frontier_db.UrlOutcome(due.url_hash, state_name, attempts, status, kind)
        else:
            url_wait = min(s.crawler_max_backoff_sec, s.crawler_retry_base_sec * 2 ** (attempts - 1))
            if wait is not None:
                url_wait = min(s.crawler_max_backoff_sec, max(wait, 0.0))
            outcome = frontier_db.UrlOutcome(due.url_hash, "queued", attempts, status, kind, next_in=url_wait)
        return self._result(state, work, outcome, counts=counts)

    # --- robots.txt ------------------------------------------------------------------------------------
    async def _load_robots(self, state: SiteState, work: OriginWork) -> bool:
        """Make the origin's robots.txt rules ready; False if it must wait (robots unreachable)."""
        s = self.settings
        if not s.crawler_respect_robots:
            return True
        info = work.info
        version = info.robots_version
        if info.robots_fresh and version is not None:
            cached = self.robots_cache.get(work.origin, version)
            if cached is None:  # another node fetched it: parse the shared copy once
                status, body, tdmrep, version = await self.call_db(
                    frontier_db.load_robots, self.db, work.origin
                )
                if status is not None and version is not None:
                    cached = (robots_rules.robots_from_response(status, body), tdmrep)
                    self.robots_cache.put(work.origin, version, *cached)
            if cached is not None:
                rules, tdmrep = cached
                if rules is None:  # unreachable when last asked: wait for the retry time
                    state.gate.defer(s.crawler_robots_retry_sec)
                    state.give_back = True
                    return False
                work.rules, work.tdmrep = rules, tdmrep
                return True
        status, body, kind = await self._fetch_small(
            state, robots_rules.robots_url(work.origin), robots_rules.ROBOTS_MAX_BYTES
        )
        if status == UNSAFE:
            return True  # no request was made; each page is refused (and counted) by the same check
        rules = robots_rules.robots_from_response(status, body)
        if rules is None:
            counts = {"errors": 1, "errors_robots_unreachable": 1}
            if kind and kind != "redirect":
                counts[f"errors_{kind}"] = 1  # and why: a timeout, a refused connection, a 5xx...
            self._count(counts)
            retry_in = s.crawler_robots_retry_sec
            if kind in HOST_KINDS:  # the host itself is unreachable: back off as a host, then give up
                state.error_streak += 1
                retry_in = min(retry_in, self._backoff(state.error_streak))
                if state.error_streak >= s.crawler_max_attempts:
                    state.give_up[work.origin] = kind
            version = await self.call_db(
                frontier_db.save_robots,
                self.db,
                work.origin,
                owner=self.owner,
                site=state.site,
                token=state.lease.token,
                status=status,
                body="",
                ttl=retry_in,
                crawl_delay=info.crawl_delay,
                tdmrep="",
            )
            if version is not None:
                self.robots_cache.put(work.origin, version, None, "")
            state.gate.defer(retry_in)
            state.give_back = True
            return False
        state.error_streak = 0
        delay = rules.crawl_delay(s.crawler_user_agent)
        if delay:
            capped = min(delay, s.crawler_max_crawl_delay_sec)
            state.gate = state.gate.slow_down(capped, 1)
        tdm_status, tdmrep, _kind = await self._fetch_small(
            state, work.origin + robots_rules.TDMREP_PATH, robots_rules.TDMREP_MAX_BYTES
        )
        tdmrep = tdmrep if tdm_status == 200 else ""
        version = await self.call_db(
            frontier_db.save_robots,
            self.db,
            work.origin,
            owner=self.owner,
            site=state.site,
            token=state.lease.token,
            status=status,
            body=body,
            ttl=robots_rules.ROBOTS_TTL_SEC,
            crawl_delay=delay,
            tdmrep=tdmrep,
        )
        if version is not None:
            self.robots_cache.put(work.origin, version, rules, tdmrep)
        work.rules, work.tdmrep = rules, tdmrep
        return True

    async def _fetch_small(self, state: SiteState, url: str, max_bytes: int) -> tuple[int, str, str]:
        """GET a site file (robots.txt, tdmrep.json), politely: (status, text, error kind). Status 0:
        no answer; UNSAFE: the address is refused by the network-safety policy (nothing was sent)."""
        await state.gate.acquire()
        try:
            response = await self.fetcher.get(
                url, max_bytes=max_bytes, types=None, truncate=True, follow_other_origins=True
            )
        except FetchError as exc:
            log.debug("%s: %s", url, exc)
            if exc.kind == "unsafe_address":
                return UNSAFE, "", exc.kind
            if exc.kind in ("redirect_loop", "too_many_redirects", "bad_redirect"):
                return 404, "", exc.kind  # RFC 9309: too many redirects may be taken as "unavailable"
            return 0, "", exc.kind
        finally:
            state.gate.release()
        self._count({"requests": 1, "bytes": response.wire_bytes})
        if response.redirect_to is not None:
            return 0, "", "redirect"
        try:
            text, _charset = decode_body(response.body, response.charset or "utf-8")
        except (LookupError, ValueError, TypeError):
            text = response.body.decode("utf-8", errors="replace")
        return response.status, text, ""


# Failures that say something about the URL, not the moment: the URL is skipped, not retried.
SKIP_KINDS = {
    "unsafe_address",
    "content_type",
    "too_large",
    "binary",
    "redirect_loop",
    "too_many_redirects",
    "bad_redirect",
    "bad_url",
    "encoding",
    "robots",
}
