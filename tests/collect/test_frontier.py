"""The frontier in the database: idempotent queueing, host leases, expiry, budgets, sharding."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from aifactory.collect import frontier as f
from aifactory.collect.urls import origin_of, shard_of
from aifactory.db import Database
from aifactory.db.schema import frontier, hosts


def add(db: Database, urls: list[str], *, max_per_host: int = 100, max_variants: int = 50) -> tuple[int, int]:
    with db.begin() as conn:
        return f.add_urls(
            db, conn, [f.NewUrl(u) for u in urls], max_per_host=max_per_host, max_variants=max_variants
        )


def claim(db: Database, owner: str, **kwargs: object) -> list[str]:
    options = {"limit": 10, "lease_sec": 30.0, "max_pages_per_host": 100, **kwargs}
    return sorted(lease.origin for lease in f.claim_hosts(db, owner, **options))  # type: ignore[arg-type]


def test_queueing_is_idempotent_and_creates_hosts(db: Database) -> None:
    urls = ["http://a.test/", "http://a.test/x", "http://b.test:8080/"]
    assert add(db, urls) == (3, 2)
    assert add(db, urls) == (0, 0)  # seeds are queued every cycle: nothing changes the second time
    with db.read() as conn:
        rows = conn.execute(
            sa.select(hosts.c.origin, hosts.c.shard, hosts.c.has_work, hosts.c.urls_known)
        ).all()
    assert {(r.origin, r.shard, r.has_work, r.urls_known) for r in rows} == {
        ("http://a.test", shard_of("http://a.test"), True, 2),
        ("http://b.test:8080", shard_of("http://b.test:8080"), True, 1),
    }


def test_a_leased_host_is_nobody_elses_until_its_lease_expires(db: Database) -> None:
    add(db, ["http://a.test/", "http://b.test/"])
    first = claim(db, "node-1", limit=1)
    second = claim(db, "node-2")
    assert len(first) == len(second) == 1 and first != second  # the second node gets the other host
    assert claim(db, "node-3") == []
    with db.begin() as conn:  # node-1 died: its lease runs out
        conn.execute(hosts.update().where(hosts.c.lease_owner == "node-1").values(lease_expires=0.0))
    assert len(claim(db, "node-3")) == 1
    assert f.renew_leases(db, "node-1", ["http://a.test", "http://b.test"], 30.0) == set()  # it lost them


def test_release_puts_the_host_back_when_due_and_only_if_it_has_work(db: Database) -> None:
    add(db, ["http://a.test/", "http://a.test/x"])
    claim(db, "n")
    due = sorted(f.due_urls(db, "http://a.test", 10), key=lambda d: d.url)
    assert [d.url for d in due] == ["http://a.test/", "http://a.test/x"]
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due[0].url_hash, "done", 1, 200, next_in=None)])
    f.release_host(db, "n", "http://a.test", ready_in=60.0, error_streak=0, max_pages_per_host=100)
    assert claim(db, "n") == []  # not before its politeness interval is over
    with db.begin() as conn:
        conn.execute(hosts.update().values(ready_at=0.0))
    assert claim(db, "n") == ["http://a.test"]
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due[1].url_hash, "failed", 1, 404, "http_4xx")])
    f.release_host(db, "n", "http://a.test", ready_in=0.0, error_streak=0, max_pages_per_host=100)
    with db.read() as conn:
        assert conn.execute(sa.select(hosts.c.has_work, hosts.c.lease_owner)).one() == (False, None)
    add(db, ["http://a.test/new"])  # a link found elsewhere gives the host work again
    assert claim(db, "n") == ["http://a.test"]


def test_a_url_waiting_for_a_retry_is_not_due(db: Database) -> None:
    add(db, ["http://a.test/"])
    claim(db, "n")
    (due,) = f.due_urls(db, "http://a.test", 10)
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due.url_hash, "queued", 1, 503, "http_503", next_in=300.0)])
    assert f.due_urls(db, "http://a.test", 10) == []
    f.release_host(db, "n", "http://a.test", ready_in=0.0, error_streak=1, max_pages_per_host=100)
    assert claim(db, "n") == []  # the host is ready only when its URL is
    assert 290 < (f.next_due_in(db, {"http://a.test"}) or 0) <= 300


def test_page_budget_and_trap_caps(db: Database) -> None:
    added, _ = add(db, [f"http://a.test/p{i}" for i in range(50)], max_per_host=10)
    assert added == 20  # 2 x the page budget may be queued
    added, _ = add(db, [f"http://b.test/list?page={i}" for i in range(30)], max_variants=5)
    assert added == 5
    added, _ = add(db, [f"http://b.test/cal/20{i:02d}/01/" for i in range(30)], max_variants=5)
    assert added == 5
    with db.begin() as conn:
        f.add_host_pages(conn, {"http://a.test": 10})
    assert claim(db, "n", max_pages_per_host=10) == ["http://b.test"]  # a.test has spent its budget


def test_hosts_of_my_shard_come_first_and_others_only_after_waiting(db: Database) -> None:
    origins = [f"http://h{i}.test" for i in range(40)]
    add(db, [o + "/" for o in origins])
    mine = sorted(o for o in origins if shard_of(o) % 2 == 0)
    assert claim(db, "even", limit=40, shard=(0, 2), steal_after=3600.0) == mine
    with db.begin() as conn:  # the other node's hosts have now waited an hour
        conn.execute(hosts.update().values(ready_at=hosts.c.ready_at - 7200))
    assert claim(db, "even", limit=40, shard=(0, 2), steal_after=3600.0) == sorted(set(origins) - set(mine))


def test_refetches_come_due(db: Database) -> None:
    add(db, ["http://a.test/"])
    claim(db, "n")
    (due,) = f.due_urls(db, "http://a.test", 10)
    with db.begin() as conn:
        f.finish_urls(db, conn, [f.UrlOutcome(due.url_hash, "done", 1, 200, etag='"v1"', next_in=-1.0)])
    f.release_host(db, "n", "http://a.test", ready_in=0.0, error_streak=0, max_pages_per_host=100)
    assert f.requeue_due(db) == 1
    (again,) = f.due_urls(db, "http://a.test", 10)
    assert again.etag == '"v1"' and again.fetched_before


def test_concurrent_claims_never_share_a_host(db: Database) -> None:
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
        owners = conn.execute(sa.select(hosts.c.lease_owner).where(hosts.c.lease_owner.is_(None))).all()
        assert owners == []
        assert conn.execute(sa.select(sa.func.count()).select_from(frontier)).scalar() == 30
    assert origin_of("http://h1.test/") in claimed
