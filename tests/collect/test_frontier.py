"""The frontier in the database: idempotent queueing, site leases with fencing tokens, expiry, budgets,
sharding, politeness units, retention, and queries that use their indexes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from aifactory.collect import frontier as f
from aifactory.collect.urls import shard_of
from aifactory.db import Database, counters
from aifactory.db.schema import frontier, hosts, pages, sites


def add(
    db: Database, urls: list[str], *, max_per_host: int = 100, max_variants: int = 50, per: str = "domain"
) -> tuple[int, int]:
    with db.begin() as conn:
        return f.add_urls(
            db,
            conn,
            [f.NewUrl(u) for u in urls],
            max_per_host=max_per_host,
            max_variants=max_variants,
            per=per,
        )


def leases(db: Database, owner: str, **kwargs: object) -> list[f.SiteLease]:
    options = {"limit": 10, "lease_sec": 30.0, **kwargs}
    return f.claim_sites(db, owner, **options)  # type: ignore[arg-type]


def claim(db: Database, owner: str, **kwargs: object) -> list[str]:
    return sorted(lease.site for lease in leases(db, owner, **kwargs))


def release(db: Database, lease: f.SiteLease, owner: str = "n", **kwargs: object) -> bool:
    options = {"ready_in": 0.0, "error_streak": 0, "max_pages_per_host": 100, **kwargs}
    return f.release_site(db, owner, lease.site, lease.token, **options)  # type: ignore[arg-type]


def expire_leases(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(sites.update().values(ready_at=0.0))


def test_queueing_is_idempotent_and_creates_hosts_and_sites(db: Database) -> None:
    urls = ["http://a.test/", "http://a.test/x", "http://b.test:8080/"]
    assert add(db, urls) == (3, 2)
    assert add(db, urls) == (0, 0)  # seeds are queued every cycle: nothing changes the second time
    with db.read() as conn:
        rows = conn.execute(
            sa.select(hosts.c.origin, hosts.c.site, hosts.c.has_work, hosts.c.urls_known)
        ).all()
        site_rows = conn.execute(sa.select(sites.c.site, sites.c.shard, sites.c.has_work)).all()
    assert {tuple(r) for r in rows} == {
        ("http://a.test", "a.test", True, 2),
        ("http://b.test:8080", "b.test", True, 1),
    }
    assert {tuple(r) for r in site_rows} == {
        ("a.test", shard_of("a.test"), True),
        ("b.test", shard_of("b.test"), True),
    }


def test_schemes_ports_and_subdomains_of_one_site_are_one_lease(db: Database) -> None:
    add(
        db,
        [
            "http://example.org/",
            "https://example.org/",
            "http://example.org:8080/",
            "https://www.example.org/",
        ],
    )
    add(db, ["http://alice.github.io/", "http://bob.github.io/"])  # a public suffix: two sites
    (site, *others) = leases(db, "n", limit=1)
    assert others == [] and site.site == "example.org"
    assert {o.origin for o in site.origins} == {
        "http://example.org",
        "https://example.org",
        "http://example.org:8080",
        "https://www.example.org",
    }
    assert claim(db, "n2") == ["alice.github.io", "bob.github.io"]
    # Per host instead: www.example.org is a site of its own (the hosts are regrouped once).
    assert f.ensure_site_mode(db, "host") and not f.ensure_site_mode(db, "host")
    expire_leases(db)
    assert claim(db, "n3") == ["alice.github.io", "bob.github.io", "example.org", "www.example.org"]


def test_a_leased_site_is_nobody_elses_until_its_lease_expires(db: Database) -> None:
    add(db, ["http://a.test/", "http://b.test/"])
    first = claim(db, "node-1", limit=1)
    second = claim(db, "node-2")
    assert len(first) == len(second) == 1 and first != second  # the second node gets the other site
    assert claim(db, "node-3") == []
    with db.begin() as conn:  # node-1 died: its lease runs out
        conn.execute(sites.update().where(sites.c.lease_owner == "node-1").values(ready_at=0.0))
    assert len(claim(db, "node-3")) == 1


def test_leases_are_fenced_by_their_token(db: Database) -> None:
    add(db, ["http://a.test/"])
    (old,) = leases(db, "node-1")
    expire_leases(db)  # node-1 stalled past its lease; node-2 takes the site over
    (new,) = leases(db, "node-2")
    assert new.token > old.token
    assert f.renew_leases(db, "node-1", {old.site: old.token}, 30.0) == set()
    assert f.renew_leases(db, "node-2", {new.site: new.token}, 30.0) == {"a.test"}
    # The same node claiming again (a restart under its old id) holds a new token too.
    with db.begin() as conn:
        conn.execute(sites.update().values(ready_at=0.0, lease_owner="node-1"))
    (again,) = leases(db, "node-1")
    assert f.renew_leases(db, "node-1", {old.site: old.token}, 30.0) == set()
    assert f.save_robots(
        db, "http://a.test", owner="node-1", site="a.test", token=old.token, status=200, body="x", ttl=60,
        crawl_delay=None, tdmrep="",
    ) is None  # fmt: skip
    assert not release(db, old, owner="node-1")  # a stale release writes nothing
    with db.read() as conn:
        assert conn.execute(sa.select(sites.c.lease_owner, sites.c.lease_token)).one() == (
            "node-1",
            again.token,
        )
    assert release(db, again, owner="node-1")


def test_release_puts_the_site_back_when_due_and_only_if_it_has_work(db: Database) -> None:
    add(db, ["http://a.test/", "http://a.test/x"])
    (lease,) = leases(db, "n")
    due = sorted(f.due_urls(db, "http://a.test", 10), key=lambda d: d.url)
    assert [d.url for d in due] == ["http://a.test/", "http://a.test/x"]
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due[0].url_hash, "done", 0, 200, next_in=None)])
    assert release(db, lease, ready_in=60.0)
    assert claim(db, "n") == []  # not before its politeness interval is over
    expire_leases(db)
    (lease,) = leases(db, "n")
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due[1].url_hash, "failed", 1, 404, "http_4xx")])
    assert release(db, lease)
    with db.read() as conn:
        assert conn.execute(sa.select(sites.c.has_work, sites.c.lease_owner)).one() == (False, None)
        assert conn.execute(sa.select(hosts.c.has_work)).scalar() is False
    add(db, ["http://a.test/new"])  # a link found elsewhere gives the site work again
    assert claim(db, "n") == ["a.test"]


def test_a_url_waiting_for_a_retry_is_not_due(db: Database) -> None:
    add(db, ["http://a.test/"])
    (lease,) = leases(db, "n")
    (due,) = f.due_urls(db, "http://a.test", 10)
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due.url_hash, "queued", 1, 503, "http_503", next_in=300.0)])
    assert f.due_urls(db, "http://a.test", 10) == []
    release(db, lease, error_streak=1)
    assert claim(db, "n") == []  # the site is ready only when its URL is
    assert 290 < (f.next_due_in(db, {"http://a.test"}) or 0) <= 300


def test_page_budget_and_trap_caps(db: Database) -> None:
    added, _ = add(db, [f"http://a.test/p{i}" for i in range(50)], max_per_host=10)
    assert added == 20  # 2 x the page budget may be queued
    added, _ = add(db, [f"http://b.test/list?page={i}" for i in range(30)], max_variants=5)
    assert added == 5
    added, _ = add(db, [f"http://b.test/cal/20{i:02d}/01/" for i in range(30)], max_variants=5)
    assert added == 5


def test_a_host_that_spent_its_page_budget_still_gets_its_refetches(db: Database) -> None:
    add(db, [f"http://a.test/p{i}" for i in range(4)])
    (lease,) = leases(db, "n")
    due = f.due_urls(db, "http://a.test", 2)
    with db.begin() as conn:  # two pages fetched: the budget of 2 is spent, two new URLs wait
        f.finish_urls(db, conn, [f.UrlOutcome(d.url_hash, "done", 0, 200, next_in=-1.0) for d in due])
        f.add_host_pages(conn, {"http://a.test": 2})
    assert release(db, lease, max_pages_per_host=2)
    assert claim(db, "n") == []  # nothing it may fetch: its new URLs are over budget
    assert f.requeue_due(db) == 2  # their refetches come due
    (lease,) = leases(db, "n")
    assert {d.url for d in f.due_urls(db, "http://a.test", 10, refetch_only=True)} == {d.url for d in due}
    assert release(db, lease, max_pages_per_host=2)
    with db.read() as conn:
        assert conn.execute(sa.select(sites.c.has_work)).scalar() is True


def test_sites_of_my_shard_come_first_and_others_only_after_waiting(db: Database) -> None:
    names = [f"h{i}.test" for i in range(40)]
    add(db, [f"http://{name}/" for name in names])
    mine = sorted(name for name in names if shard_of(name) % 2 == 0)
    assert claim(db, "even", limit=40, shard=(0, 2), steal_after=3600.0) == mine
    with db.begin() as conn:  # the other node's sites have now waited an hour
        conn.execute(
            sites.update().where(sites.c.lease_owner.is_(None)).values(ready_at=sites.c.ready_at - 7200)
        )
    assert claim(db, "even", limit=40, shard=(0, 2), steal_after=3600.0) == sorted(set(names) - set(mine))


def test_refetches_come_due(db: Database) -> None:
    add(db, ["http://a.test/"])
    (lease,) = leases(db, "n")
    (due,) = f.due_urls(db, "http://a.test", 10)
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due.url_hash, "done", 0, 200, etag='"v1"', next_in=-1.0)])
    release(db, lease)
    assert f.requeue_due(db) == 1
    (again,) = f.due_urls(db, "http://a.test", 10)
    assert again.etag == '"v1"' and again.fetched_before


def test_retention_prunes_old_pages_and_finished_urls_and_keeps_the_counts(db: Database) -> None:
    add(db, ["http://a.test/old", "http://a.test/new", "http://a.test/refetched"])
    (lease,) = leases(db, "n")
    due = {d.url.rsplit("/", 1)[1]: d for d in f.due_urls(db, "http://a.test", 10)}
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due["old"].url_hash, "failed", 1, 404, "http_4xx")])
        f.finish_urls(db, conn, [f.UrlOutcome(due["refetched"].url_hash, "done", 0, 200, next_in=3600.0)])
        for name in ("old", "new"):
            conn.execute(
                pages.insert().values(url_hash=due[name].url_hash, url=due[name].url, final_url=due[name].url,
                                      origin="http://a.test", status=200, fetched_at=db.clock())
            )  # fmt: skip
        counters.add(db, {"crawl.fetched": 2}, conn)
        aged = [due["old"].url_hash, due["refetched"].url_hash]
        conn.execute(frontier.update().where(frontier.c.url_hash.in_(aged)).values(finished_at=0.0))
        conn.execute(pages.update().where(pages.c.url_hash == due["old"].url_hash).values(fetched_at=0.0))
    release(db, lease)
    assert f.prune(db, keep_sec=86400.0) == (1, 1)
    with db.read() as conn:
        assert set(conn.execute(sa.select(frontier.c.url)).scalars()) == {
            "http://a.test/new",
            "http://a.test/refetched",
        }
        assert set(conn.execute(sa.select(pages.c.url)).scalars()) == {"http://a.test/new"}
        assert conn.execute(sa.select(hosts.c.urls_known)).scalar() == 3  # the host's cap still counts them
    totals = counters.get_all(db, "crawl.")
    assert totals["crawl.fetched"] == 2 and totals["crawl.pruned_pages"] == totals["crawl.pruned_urls"] == 1


def test_an_origin_too_long_for_its_column_is_never_queued(db: Database) -> None:
    long_host = "http://" + "a" * 310 + ".test/"  # normalization refuses it too; this is the last line
    assert add(db, [long_host, "http://ok.test/"]) == (1, 1)


def test_concurrent_claims_never_share_a_site(db: Database) -> None:
    add(db, [f"http://h{i}.test/" for i in range(30)])
    claimed: list[str] = []
    lock = threading.Lock()

    def node(name: str) -> None:
        for _ in range(5):
            got = claim(db, name, limit=2)
            with lock:
                claimed.extend(got)

    threads = [threading.Thread(target=node, args=(f"node-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(claimed) == len(set(claimed)) == 30
    with db.read() as conn:
        assert conn.execute(sa.select(sites.c.site).where(sites.c.lease_owner.is_(None))).all() == []
        assert conn.execute(sa.select(sa.func.count()).select_from(frontier)).scalar() == 30


@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, object]]]:
    seen: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


@pytest.mark.postgres
def test_claim_due_and_refetch_queries_are_index_ranges_without_a_sort(pg_url: str) -> None:
    """With scans other than plain index scans, and sorts, made as costly as the planner allows, each
    query's plan must still bound its timestamp inside the index condition and read rows in the
    index's order: a Sort left in a plan (or a clock function) means no index can serve the query."""
    from aifactory.db import migrate

    db = Database(pg_url)
    migrate.upgrade(db)
    try:
        add(db, [f"http://h{i}.test/p{j}" for i in range(20) for j in range(5)])
        with statements(db) as seen:
            (lease, *_rest) = leases(db, "n", limit=3, shard=(0, 2), steal_after=60.0)
            f.due_urls(db, lease.origins[0].origin, 10)
            f.requeue_due(db)
        plans = []
        with db.engine.connect() as conn:
            for knob in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.exec_driver_sql(f"SET {knob} = off")
            for statement, parameters in seen:
                if "FROM sites" in statement or "FROM frontier" in statement:
                    rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()  # type: ignore[arg-type]
                    plans.append("\n".join(rows))
        relevant = [plan for plan in plans if "ready_at" in plan or "next_fetch_at" in plan]
        assert len(relevant) >= 3, plans
        for plan in relevant:
            assert "Sort" not in plan, plan
            assert "clock_timestamp" not in plan, plan
            assert "Index" in plan, plan
    finally:
        db.dispose()
