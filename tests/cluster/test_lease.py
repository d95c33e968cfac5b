"""One master per database: a second one is refused, naming the first; a dead one's lease is not kept."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa

from aifactory.cluster import membership
from aifactory.cluster.lease import APP_PREFIX, LEASE_CLASS, MasterConflict, MasterLease
from aifactory.cluster.node import Node
from aifactory.db import Database, migrate
from aifactory.db.migrate import schema_key
from tests.sample_engines import TICKER


def lease(db: Database, instance: str) -> MasterLease:
    return MasterLease(
        db, instance_id=instance, hostname=socket.gethostname(), description=f"node {instance}"
    )


def test_a_second_master_is_refused_until_the_first_stops(db: Database, make_settings) -> None:
    settings = make_settings(database_url=db.url)
    first = Node(settings, db, [TICKER], role="master", node_id="m1")
    first.start()
    try:
        second = Node(settings, db, [TICKER], role="master", node_id="m2")
        with pytest.raises(MasterConflict, match="already running"):
            second.start()
        assert not membership.exists(db, "m2")  # refused before it registered anything
        worker = Node(settings, db, [TICKER], role="worker", node_id="w1")
        worker.start()  # workers need no lease
        worker.stop(timeout=5)
    finally:
        first.stop(timeout=5)
    second = Node(settings, db, [TICKER], role="master", node_id="m2")
    second.start()
    second.stop(timeout=5)


@pytest.mark.postgres
def test_the_lease_of_a_master_that_died_on_this_host_is_taken_at_once(pg_url: str) -> None:
    """Its session may outlive it for a while (a half-open connection); the pid says it is dead."""
    db = Database(pg_url)
    try:
        migrate.upgrade(db)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        started = membership.process_started(dead.pid)
        dead.wait()
        membership.register(
            db, node_id="m1", role="master", hostname=socket.gethostname(), pid=dead.pid,
            instance_id="deadbeef", version="t", api_url="", alive_window=60, started=started,
        )  # fmt: skip
        lingering = db.dedicated(APP_PREFIX + "deadbeef")
        key = schema_key(lingering)
        assert lingering.execute(
            sa.text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": LEASE_CLASS, "k": key}
        ).scalar()
        mine = lease(db, "fresh")
        mine.acquire()
        assert mine.held and mine.check() == "held"
        with pytest.raises(sa.exc.DBAPIError):  # the dead master's session was ended
            lingering.execute(sa.text("SELECT 1"))
        mine.release()
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_live_holder_is_named_and_kept(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        holder = lease(db, "alive")
        holder.acquire()
        with pytest.raises(MasterConflict, match="another master is already running as the master"):
            lease(db, "second").acquire()  # no node row yet: "another master"
        assert holder.check() == "held"
        holder.release()
        lease(db, "second").acquire()
    finally:
        db.dispose()
