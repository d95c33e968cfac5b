"""The crawl loop of one node: lease hosts, fetch their due URLs politely, hand pages on, give hosts back.

    run(max_pages)
      claim hosts (database lease) --> one task per host:
          robots.txt (+ tdmrep.json) from the shared cache, or fetched and cached
          loop: due URLs of the host -> for each: robots check, HostGate, NodeThrottle, fetch, classify
                -> ResultWriter (batched transaction: page to the sink, URL marked, links queued)
          give the host back (ready again after its interval, back-off or Retry-After)
      renew leases every lease/3 s; stop when the budget is spent, there is no work, or stop() says so

Nothing here can end the crawl because of one page: every fetch ends as a counted outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
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
from aifactory.collect.sink import FetchedPage, PageSink, PageStore
from aifactory.collect.urls import default_scope, directory_scope, in_scope
from aifactory.collect.writer import Result, ResultWriter, store
from aifactory.db import Database
from aifactory.settings import Settings

log = logging.getLogger("aifactory.crawl")

MAX_HOLD_SEC = 5.0  # a host that must wait longer than this is given back instead of held idle
CLAIM_EVERY_SEC = 0.5  # how often a node with free capacity looks for more hosts
IDLE_GRACE_SEC = 1.0  # no work for this long ends a run (the engine then polls again)
RETRY_STATUSES = (429, 503)
UNSAFE = -1  # _fetch_small: the address is not one we may fetch from


@dataclass
class RunStats:
    fetched: int = 0
    hosts: int = 0
    seconds: float = 0.0
    reason: str = ""  # budget | idle | stopped


@dataclass
class HostState:
    """A leased host as its task sees it."""

    lease: frontier_db.HostLease
    gate: HostGate
    rules: robots_rules.Robots | None = None
    tdmrep: str = ""
    error_streak: int = 0
    lost: bool = False  # the lease was taken over: stop at once
    give_back: bool = False  # back-off too long to wait for while holding the lease
    new_pages: int = 0  # first fetches started under this lease (for the host's page budget)
    budget_spent: bool = False
    unflushed: set[int] = field(default_factory=set)  # URLs handed to the writer since the last flush
    in_flight: set[asyncio.Task] = field(default_factory=set)


def retry_after_seconds(value: str) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    value = value.strip()
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
        self.max_hosts = 4 * self.workers  # a polite host keeps a slot busy only part of the time
        self.fetcher = Fetcher(settings, max_connections=self.workers)
        self.hosts: dict[str, HostState] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self._db_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="crawl-db")
        self._throttle: NodeThrottle | None = None
        self._writer: ResultWriter | None = None
        self._budget = Budget(0)
        self._stopping = False

    # --- set-up and tear-down ---------------------------------------------------------------------
    async def __aenter__(self) -> Crawler:
        await self.fetcher.__aenter__()
        self._throttle = NodeThrottle(self.workers, self.settings.crawler_batch_sleep_sec)
        self._writer = ResultWriter(
            functools.partial(store, self.db, self.sink, self.settings), self._db, self.on_counts
        )
        self._writer.start()
        await self._db(frontier_db.release_all, self.db, self.owner)  # leases of an earlier life
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._end_tasks(cancel=True)
            if self._writer is not None:
                await self._writer.close()
            await self._db(frontier_db.release_all, self.db, self.owner)
        finally:
            await self.fetcher.__aexit__()
            self._db_pool.shutdown(wait=False)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking database call on the crawler's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))

    # --- the run loop ------------------------------------------------------------------------------
    async def run(
        self,
        *,
        max_pages: int,
        stop: Callable[[], bool],
        shard: tuple[int, int] | None = None,
        idle_grace: float = IDLE_GRACE_SEC,
    ) -> RunStats:
        """Crawl until `max_pages` fetches, until no host has due work for `idle_grace` seconds, or
        until `stop()`; every lease taken is given back before returning."""
        s = self.settings
        self._budget = Budget(max_pages)
        self._stopping = False
        stats = RunStats()
        started = time.monotonic()
        last_claim = last_renew = 0.0
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            if stop():
                stats.reason = "stopped"
                self._stopping = True
                break
            if self._budget.spent:
                stats.reason = "budget"
                break
            if now - last_renew >= s.crawler_lease_sec / 3:
                last_renew = now
                await self._renew()
            free = self.max_hosts - len(self.tasks)
            if free > 0 and now - last_claim >= CLAIM_EVERY_SEC:
                last_claim = now
                leases = await self._db(
                    frontier_db.claim_hosts,
                    self.db,
                    self.owner,
                    limit=free,
                    lease_sec=s.crawler_lease_sec,
                    max_pages_per_host=s.crawler_max_pages_per_host,
                    shard=shard,
                    steal_after=s.crawler_lease_sec,
                    only_origins=self.only_origins,
                )
                for lease in leases:
                    self._start_host(lease)
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
        await self._end_tasks(cancel=self._stopping)
        stats.fetched = max_pages - max(0, self._budget.left)
        stats.seconds = time.monotonic() - started
        return stats

    def _start_host(self, lease: frontier_db.HostLease) -> None:
        s = self.settings
        delay = lease.crawl_delay or 0.0
        interval = max(s.crawler_domain_min_interval_sec, delay)
        concurrency = 1 if delay else s.crawler_domain_concurrency
        state = HostState(lease=lease, gate=HostGate(interval, concurrency), error_streak=lease.error_streak)
        self.hosts[lease.origin] = state
        task = asyncio.create_task(self._host_main(state), name=f"host {lease.origin}")
        self.tasks[lease.origin] = task
        task.add_done_callback(lambda _t, origin=lease.origin: self._host_done(origin))

    def _host_done(self, origin: str) -> None:
        self.tasks.pop(origin, None)
        self.hosts.pop(origin, None)

    async def _end_tasks(self, *, cancel: bool) -> None:
        """Wind the host tasks down: cancel them (stop) or let them finish their fetches (budget)."""
        tasks = list(self.tasks.values())
        if cancel:
            for task in tasks:
                task.cancel()  # the host task gives its host back all the same (see _host_main)
        while tasks:  # fetches in flight may take up to the total timeout: keep the leases alive meanwhile
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.crawler_lease_sec / 3)
            tasks = list(pending)
            if tasks:
                await self._renew()

    async def _renew(self) -> None:
        origins = list(self.hosts)
        if not origins:
            return
        try:
            held = await self._db(
                frontier_db.renew_leases, self.db, self.owner, origins, self.settings.crawler_lease_sec
            )
        except Exception as exc:  # the database is away: keep going, the next renewal may succeed
            log.warning("could not renew host leases: %s", exc)
            return
        for origin in origins:
            if origin not in held and origin in self.hosts:
                log.warning("lease on %s was taken over; leaving the host", origin)
                self.hosts[origin].lost = True

    def _winding_down(self, state: HostState) -> bool:
        return self._stopping or state.lost or state.give_back or state.budget_spent or self._budget.spent

    # --- one host ------------------------------------------------------------------------------------
    async def _host_main(self, state: HostState) -> None:
        origin = state.lease.origin
        assert self._writer is not None
        try:
            if await self._load_robots(state):
                size = max(8, 4 * self.settings.crawler_domain_concurrency)
                while not self._winding_down(state):
                    if len(state.unflushed) > 4 * size:
                        await self._flush(state)
                    rows = await self._db(frontier_db.due_urls, self.db, origin, size + len(state.unflushed))
                    # URLs handled under this lease whose results are not written yet still look queued.
                    batch = [due for due in rows if due.url_hash not in state.unflushed][:size]
                    if batch:
                        await self._fetch_batch(state, batch)
                    elif state.unflushed:
                        await self._flush(state)  # then look again: their pages may have added links
                    else:
                        break
        except asyncio.CancelledError:
            pass  # stopping: what was not stored stays queued
        except Exception:
            log.exception("host %s failed; giving it back", origin)
        finally:
            if state.in_flight:
                for task in state.in_flight:
                    task.cancel()
                await asyncio.gather(*state.in_flight, return_exceptions=True)
            await asyncio.shield(self._give_back(state))

    async def _flush(self, state: HostState) -> None:
        assert self._writer is not None
        await self._writer.flush()
        state.unflushed.clear()

    async def _give_back(self, state: HostState) -> None:
        assert self._writer is not None
        try:
            await self._writer.flush()
            if state.lost:
                return
            await self._db(
                frontier_db.release_host,
                self.db,
                self.owner,
                state.lease.origin,
                ready_in=state.gate.wait_needed(),
                error_streak=state.error_streak,
                max_pages_per_host=self.settings.crawler_max_pages_per_host,
            )
        except Exception as exc:  # the lease then simply expires
            log.warning("could not give back %s: %s", state.lease.origin, exc)

    async def _fetch_batch(self, state: HostState, batch: list[frontier_db.DueUrl]) -> None:
        assert self._writer is not None
        for due in batch:
            if self._winding_down(state):
                break
            if state.rules is not None and not state.rules.allows(due.url, self.settings.crawler_user_agent):
                state.unflushed.add(due.url_hash)
                await self._writer.put(self._blocked(state, due))
                continue
            if state.gate.wait_needed() > MAX_HOLD_SEC:
                state.give_back = True
                break
            if not due.fetched_before:
                if state.lease.pages_fetched + state.new_pages >= self.settings.crawler_max_pages_per_host:
                    state.budget_spent = True  # CRAWLER_MAX_PAGES_PER_HOST: this host is done
                    break
                state.new_pages += 1
            await state.gate.acquire()
            if self._winding_down(state) or not self._budget.take():
                state.gate.release()
                state.new_pages -= 0 if due.fetched_before else 1
                break
            task = asyncio.create_task(self._fetch_one(state, due))
            state.in_flight.add(task)
            task.add_done_callback(state.in_flight.discard)
        if state.in_flight:
            await asyncio.gather(*list(state.in_flight), return_exceptions=True)

    def _blocked(self, state: HostState, due: frontier_db.DueUrl) -> Result:
        outcome = frontier_db.UrlOutcome(due.url_hash, "blocked", due.attempts, error="robots", fetched=False)
        return Result(outcome, state.lease.origin, counts={"robots_blocked": 1})

    async def _fetch_one(self, state: HostState, due: frontier_db.DueUrl) -> None:
        """Fetch one URL (its host slot is already held) and queue the result for the writer."""
        assert self._throttle is not None and self._writer is not None
        try:
            await self._throttle.acquire()
            try:
                result = await self._fetch_and_classify(state, due)
            finally:
                self._throttle.release()
        except asyncio.CancelledError:
            self._budget.give_back()
            raise
        except Exception:  # a bug on one page must not end the crawl: count it and go on
            log.exception("unexpected error fetching %s", due.url)
            outcome = frontier_db.UrlOutcome(due.url_hash, "failed", due.attempts + 1, error="internal")
            result = Result(outcome, state.lease.origin, counts={"errors": 1, "errors_internal": 1})
        finally:
            state.gate.release()
        result.counts["attempts"] = 1  # one page of the cycle's budget, whatever came of it
        result.new_page = not due.fetched_before  # and of the host's page budget
        state.unflushed.add(due.url_hash)
        await self._writer.put(result)

    async def _fetch_and_classify(self, state: HostState, due: frontier_db.DueUrl) -> Result:
        s = self.settings
        origin = state.lease.origin
        started = time.monotonic()
        try:
            response = await self.fetcher.get(
                due.url,
                etag=due.etag,
                last_modified=due.last_modified,
                may_fetch=lambda url: state.rules is None or state.rules.allows(url, s.crawler_user_agent),
            )
        except FetchError as exc:
            return self._failure(state, due, exc.kind, retry=exc.retry, detail=exc.detail)
        counts: dict[str, float] = {"requests": 1, "bytes": response.wire_bytes}
        if response.status in RETRY_STATUSES:
            wait = retry_after_seconds(response.header("retry-after"))
            return self._failure(
                state, due, f"http_{response.status}", retry=True, wait=wait, status=response.status
            )
        if response.status >= 500:
            return self._failure(state, due, "http_5xx", retry=True, status=response.status)
        state.error_streak = 0
        if response.redirect_to is not None:  # to another host: queue it there (its robots, its pace)
            target = response.redirect_to
            outcome = frontier_db.UrlOutcome(
                due.url_hash, "done", due.attempts + 1, response.status, "redirect"
            )
            scope = due.scope
            if not in_scope(target, scope, allow_subdomains=s.crawler_allow_subdomains) and due.depth == 0:
                # A seed that moved (example.com -> www.example.com): the crawl follows it to its new site.
                scope = directory_scope(target) if due.source == "docs" else default_scope(target)
            new_urls = []
            if in_scope(target, scope, allow_subdomains=s.crawler_allow_subdomains):
                new_urls.append(frontier_db.NewUrl(target, due.depth, due.source, scope))
            return Result(outcome, origin, new_urls=new_urls, counts={**counts, "redirects": 1})
        if response.status == 304:
            outcome = frontier_db.UrlOutcome(
                due.url_hash,
                "done",
                due.attempts + 1,
                304,
                None,
                due.etag,
                due.last_modified,
                next_in=self._refetch_in(),
            )
            return Result(outcome, origin, counts={**counts, "not_modified": 1})
        if response.status != 200:
            kind = "http_4xx" if 400 <= response.status < 500 else "http_other"
            outcome = frontier_db.UrlOutcome(due.url_hash, "failed", due.attempts + 1, response.status, kind)
            return Result(outcome, origin, counts={**counts, "errors": 1, f"errors_{kind}": 1})
        page = self._page(state, due, response)
        outcome = frontier_db.UrlOutcome(
            due.url_hash,
            "done",
            due.attempts + 1,
            200,
            None,
            response.header("etag") or None,
            response.header("last-modified") or None,
            next_in=self._refetch_in(),
        )
        counts.update(fetched=1, fetch_seconds=time.monotonic() - started)
        return Result(
            outcome,
            origin,
            page=page,
            depth=due.depth,
            source=due.source,
            scope=due.scope,
            counts=counts,
        )

    def _refetch_in(self) -> float | None:
        return self.settings.crawler_recrawl_sec or None

    def _page(self, state: HostState, due: frontier_db.DueUrl, response: Response) -> FetchedPage:
        text, charset = decode_body(response.body, response.charset)
        page = FetchedPage(
            url=due.url,
            final_url=response.final_url,
            url_hash=due.url_hash,
            origin=state.lease.origin,
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
            if state.rules is not None:
                reason = state.rules.ai_optout(due.url)
                if reason:
                    reasons.append(reason)
            if robots_rules.tdm_reserved(state.tdmrep, due.url):
                reasons.append("tdmrep.json reservation")
            page.optout_reasons = reasons
            page.train_allowed = not reasons
        return page

    def _failure(
        self,
        state: HostState,
        due: frontier_db.DueUrl,
        kind: str,
        *,
        retry: bool,
        detail: str = "",
        wait: float | None = None,
        status: int | None = None,
    ) -> Result:
        """A failed fetch: retried later with exponential back-off (URL and host), or given up."""
        s = self.settings
        attempts = due.attempts + 1
        counts = {"errors": 1, f"errors_{kind}": 1, "requests": 0 if kind == "unsafe_address" else 1}
        if retry:
            state.error_streak += 1
            backoff = min(s.crawler_max_backoff_sec, s.crawler_retry_base_sec * 2 ** (state.error_streak - 1))
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
        log.debug("%s: %s %s", due.url, kind, detail)
        return Result(outcome, state.lease.origin, counts=counts)

    # --- robots.txt ------------------------------------------------------------------------------------
    async def _load_robots(self, state: HostState) -> bool:
        """Make the host's robots.txt rules ready; False if the host must wait (robots unreachable)."""
        s = self.settings
        if not s.crawler_respect_robots:
            return True
        lease = state.lease
        if lease.robots_fresh and lease.robots_status is not None:
            rules = robots_rules.robots_from_response(lease.robots_status, lease.robots_body or "")
            if rules is None:
                state.gate.defer(s.crawler_robots_retry_sec)
                state.give_back = True
                return False
            state.rules, state.tdmrep = rules, lease.tdmrep or ""
            return True
        status, body = await self._fetch_small(
            state, robots_rules.robots_url(lease.origin), robots_rules.ROBOTS_MAX_BYTES
        )
        if status == UNSAFE:
            return True  # no request was made; each page is refused (and counted) by the same check
        rules = robots_rules.robots_from_response(status, body)
        if rules is None:
            self.on_counts({"errors": 1, "errors_robots_unreachable": 1})
            await self._db(
                frontier_db.save_robots,
                self.db,
                lease.origin,
                status=status,
                body="",
                ttl=s.crawler_robots_retry_sec,
                crawl_delay=lease.crawl_delay,
                tdmrep=lease.tdmrep,
            )
            state.gate.defer(s.crawler_robots_retry_sec)
            state.give_back = True
            return False
        delay = rules.crawl_delay(s.crawler_user_agent)
        if delay:
            state.gate = HostGate(max(s.crawler_domain_min_interval_sec, delay), 1)
            state.gate.defer(state.gate.interval)  # robots.txt itself was just requested
        tdm_status, tdmrep = await self._fetch_small(
            state, lease.origin + robots_rules.TDMREP_PATH, robots_rules.TDMREP_MAX_BYTES
        )
        tdmrep = tdmrep if tdm_status == 200 else ""
        await self._db(
            frontier_db.save_robots,
            self.db,
            lease.origin,
            status=status,
            body=body,
            ttl=robots_rules.ROBOTS_TTL_SEC,
            crawl_delay=delay,
            tdmrep=tdmrep,
        )
        state.rules, state.tdmrep = rules, tdmrep
        return True

    async def _fetch_small(self, state: HostState, url: str, max_bytes: int) -> tuple[int, str]:
        """GET a site file (robots.txt, tdmrep.json), politely: (status, text). Status 0: no answer;
        UNSAFE: the address is refused by the network-safety policy (nothing was sent)."""
        await state.gate.acquire()
        try:
            response = await self.fetcher.get(
                url, max_bytes=max_bytes, types=None, truncate=True, follow_other_origins=True
            )
        except FetchError as exc:
            log.debug("%s: %s", url, exc)
            if exc.kind == "unsafe_address":
                return UNSAFE, ""
            if exc.kind in ("redirect_loop", "too_many_redirects", "bad_redirect"):
                return 404, ""  # RFC 9309: too many redirects may be taken as "unavailable" (allowed)
            return 0, ""
        finally:
            state.gate.release()
        self.on_counts({"requests": 1, "bytes": response.wire_bytes})
        if response.redirect_to is not None:
            return 0, ""
        text, _charset = decode_body(response.body, response.charset or "utf-8")
        return response.status, text


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
