"""Several worker processes on one PostgreSQL: every URL fetched once, and nothing lost to a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from aifactory.cluster import commands, membership
from aifactory.db import Database, migrate
from aifactory.db.schema import frontier, pages
from aifactory.db.schema import sites as site_rows
from tests.collect.sites import SiteServer, wide_site

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
SITES, PAGES = 6, 30  # six hosts (127.0.0.2 to 127.0.0.7: ports of one address are one host), 31 URLs each
SITE_FILES = ("/robots.txt", "/.well-known/tdmrep.json")


@contextmanager
def fixture_sites() -> Iterator[list[SiteServer]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(SiteServer(wide_site(PAGES), host=f"127.0.0.{2 + i}")) for i in range(SITES)
        ]


def start_worker(
    node_id: str, pg_url: str, sites: list[SiteServer], tmp: Path, interval: float
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        PYTHONUNBUFFERED="1",
        DATABASE_URL=pg_url,
        NODE_ID=node_id,
        DATA_DIR=str(tmp / node_id),
        LOG_LEVEL="warning",
        AUTO_TUNE="0",
        MAX_CRAWLER_WORKERS="4",
        NODE_HEARTBEAT_INTERVAL_SEC="0.5",
        COLLECTION_NODE_WINDOW_SEC="5",
        MAX_CRAWL_PAGES_PER_CYCLE="60",
        WEB_SEED_URLS=",".join(site.url("/") for site in sites),
        CRAWLER_PRIVATE_ALLOWLIST="127.0.0.0/8",
        CRAWLER_CONTACT_URL="https://example.invalid/crawler",
        CRAWLER_DOMAIN_MIN_INTERVAL_SEC=str(interval),
        CRAWLER_BATCH_SLEEP_SEC="0",
        CRAWLER_LEASE_SEC="3",
        CRAWLER_RETRY_BASE_SEC="0.2",
    )
    log = (tmp / f"{node_id}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "worker"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    proc.log_path = tmp / f"{node_id}.log"  # type: ignore[attr-defined]
    return proc


def wait_for(condition: Callable[[], bool], timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if proc.poll() not in (None, -signal.SIGKILL):
                output = proc.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
                raise AssertionError(f"a worker exited with {proc.returncode}:\n{output}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def scalar(db: Database, query: sa.Select) -> int:
    with db.read() as conn:
        return int(conn.execute(query).scalar_one())


def finished(db: Database) -> bool:
    """Every URL of every site fetched (each site's frontier is complete once all its pages are done)."""
    total = SITES * (PAGES + 1)
    done = sa.select(sa.func.count()).select_from(frontier).where(frontier.c.state == "done")
    return scalar(db, done) == total


def page_requests(sites: list[SiteServer]) -> Counter[str]:
    """How often each page (origin + path) was requested."""
    return Counter(
        site.origin + hit.path for site in sites for hit in site.hits if hit.path not in SITE_FILES
    )


@contextmanager
def cluster(
    pg_url: str, sites: list[SiteServer], tmp: Path, interval: float
) -> Iterator[list[subprocess.Popen]]:
    db = Database(pg_url)
    migrate.upgrade(db)  # before the workers, so they do not race to create the schema
    procs = [start_worker(f"worker-{i}", pg_url, sites, tmp, interval) for i in range(3)]
    try:
        wait_for(
            lambda: len(membership.active_node_ids(db, window=5, roles=("worker",))) == 3,
            30,
            "3 workers",
            procs,
        )
        commands.send_command(db, "start")  # Ignite
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        db.dispose()


def test_three_workers_fetch_every_url_exactly_once(pg_url: str, tmp_path: Path) -> None:
    db = Database(pg_url)
    with fixture_sites() as sites, cluster(pg_url, sites, tmp_path, interval=0.02) as procs:
        wait_for(lambda: finished(db), 60, "the crawl to finish", procs)
        requests = page_requests(sites)
    expected = {site.url(path) for site in sites for path in wide_site(PAGES)}
    assert set(requests) == expected
    assert max(requests.values()) == 1, [url for url, n in requests.items() if n > 1]
    with db.read() as conn:
        by_node = dict(
            conn.execute(sa.select(pages.c.node_id, sa.func.count()).group_by(pages.c.node_id)).all()
        )
        assert (
            conn.execute(sa.select(site_rows.c.site).where(site_rows.c.lease_owner.is_not(None))).all() == []
        )
    assert sum(by_node.values()) == len(expected)
    assert len(by_node) >= 2, by_node  # the work was shared (each node prefers its shard of the hosts)
    db.dispose()


def test_a_killed_worker_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    db = Database(pg_url)

    def held_by(node_id: str) -> set[str]:
        """The origins of the sites a node holds (each fixture site is one host, one origin)."""
        with db.read() as conn:
            held = set(
                conn.execute(sa.select(site_rows.c.site).where(site_rows.c.lease_owner == node_id)).scalars()
            )
        return {site.origin for site in fixture if site.host in held}

    def stored_by(node_id: str) -> int:
        return scalar(db, sa.select(sa.func.count()).select_from(pages).where(pages.c.node_id == node_id))

    def busy_worker() -> str | None:
        """A worker mid-crawl: it has stored pages and still holds leases (which one depends on the
        random ports, since hosts are sharded by origin)."""
        for i in range(3):
            node_id = f"worker-{i}"
            if stored_by(node_id) >= 5 and held_by(node_id):
                return node_id
        return None

    fixture: list[SiteServer] = []
    with fixture_sites() as servers, cluster(pg_url, servers, tmp_path, interval=0.1) as procs:
        fixture.extend(servers)
        picked: list[str] = []
        wait_for(lambda: bool(node := busy_worker()) and not picked.append(node), 30, "a busy worker", procs)
        victim_id = picked[0]
        victim = procs[int(victim_id.rsplit("-", 1)[1])]
        victim.send_signal(signal.SIGKILL)  # mid-crawl: leases held, fetches in flight, results unwritten
        victim.wait(10)
        orphaned = held_by(victim_id)  # its leases stay in the database until they expire
        killed_at = time.monotonic()
        stored_before = stored_by(victim_id)
        wait_for(lambda: finished(db), 90, "the others to finish", procs)
        requests = page_requests(servers)
        taken_over_after = time.monotonic() - killed_at
    expected = {site.url(path) for site in servers for path in wide_site(PAGES)}
    assert set(requests) == expected  # nothing lost: every page was fetched
    # Only what the victim had in flight (or fetched but not yet written) was fetched twice.
    twice = [url for url, n in requests.items() if n > 1]
    assert all(any(url.startswith(origin + "/") for origin in orphaned) for url in twice), (twice, orphaned)
    assert len(twice) <= len(orphaned) * 4, twice
    assert max(requests.values()) <= 2
    # The victim's hosts were finished by the others once its leases expired.
    with db.read() as conn:
        finishers = set(
            conn.execute(
                sa.select(pages.c.node_id).where(pages.c.origin.in_(sorted(orphaned))).distinct()
            ).scalars()
        )
    assert finishers - {victim_id}, finishers
    assert stored_by(victim_id) == stored_before  # the dead worker wrote nothing more
    assert taken_over_after > 0
    db.dispose()
