"""One master per database, held for as long as the master process lives.

Two masters on one database would both run the dataset and trainer engines over the same files. The
lease makes the second one refuse to start, naming the first:
  PostgreSQL  a session advisory lock (one per schema) on a connection of its own. The server releases
              it when the process dies, or, for a machine that vanished, when TCP keepalives give up
              (about 25 s). A restart on the same host after kill -9 does not wait even that long: if
              the holder's process is provably dead, its lingering session is ended.
  SQLite      an exclusive lock on DATABASE.lock next to the file (one machine, one master); the
              kernel releases it with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import IO, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory.cluster import membership
from aifactory.cluster.membership import NodeConflict
from aifactory.db import Database
from aifactory.db.migrate import schema_key

log = logging.getLogger("aifactory")

LEASE_CLASS = 741_191  # the advisory lock's first key; the second is the schema's
APP_PREFIX = "aifactory-master:"  # application_name of the lease's connection, then the instance id
STALE_WAIT_SEC = 10.0  # how long a restart waits for a dead holder's session to end
HOLDER = sa.text(  # the session holding the lease (a two-key advisory lock has objsubid 2)
    "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :c AND l.objid = :k AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class MasterConflict(NodeConflict):
    """Another master holds this database's master lease."""


class MasterLease:
    def __init__(self, db: Database, *, instance_id: str, hostname: str, description: str) -> None:
        self.db = db
        self.instance_id = instance_id
        self.hostname = hostname
        self.description = description  # "node m1, pid 123 on host", for the other master's message
        self._conn: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._file is not None

    def acquire(self) -> None:
        """Take the lease, or raise MasterConflict saying who holds it."""
        if self.held:
            return
        if self.db.sqlite_path is not None:
            self._lock_file()
            return
        deadline = time.monotonic() + STALE_WAIT_SEC
        while True:
            holder = self._try_lock()
            if holder is None:
                return
            backend, instance = holder
            row = self._holder_row(instance)
            stale = (
                row is not None
                and row["hostname"] == self.hostname
                and not membership.process_alive(row["pid"], row["process_started"])
            )
            if not stale or time.monotonic() > deadline:
                raise MasterConflict(self._conflict_message(row))
            # The holder died on this very host (kill -9, OOM) and its session lingers: end it.
            with self.db.read() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            time.sleep(0.2)

    def check(self) -> Literal["held", "lost", "unknown"]:
        """Whether the lease is still ours (called with each heartbeat). After a lost connection (the
        server restarted) it is taken again if it is free; "lost" if another master has it now."""
        if self._conn is None:
            return "held" if self._file is not None else "lost"
        try:
            self._conn.execute(sa.text("SELECT 1"))
            return "held"
        except sa.exc.SQLAlchemyError:
            self._close()
        try:
            holder = self._try_lock()
        except sa.exc.SQLAlchemyError:
            return "unknown"  # the database is away; the heartbeat fails too, and we try again
        if holder is None:
            log.warning("master lease taken again after the database connection was lost")
            return "held"
        return "lost"

    def release(self) -> None:
        self._close()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    # --- PostgreSQL -----------------------------------------------------------------------------------
    def _try_lock(self) -> tuple[int, str] | None:
        """Take the advisory lock: None on success, else (holder's backend pid, its instance id)."""
        conn = self.db.dedicated(APP_PREFIX + self.instance_id)
        try:
            key = schema_key(conn)
            if conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": LEASE_CLASS, "k": key}
            ).scalar():
                self._conn = conn
                return None
            row = conn.execute(HOLDER, {"c": LEASE_CLASS, "k": key}).first()
        except BaseException:
            conn.close()
            raise
        conn.close()
        if row is None:  # released in between: try again
            return self._try_lock()
        name = str(row.application_name or "")
        return int(row.pid), name.removeprefix(APP_PREFIX) if name.startswith(APP_PREFIX) else ""

    def _holder_row(self, instance: str) -> dict | None:
        if not instance:
            return None
        try:
            return membership.find_instance(self.db, instance)
        except sa.exc.SQLAlchemyError:  # an empty or older schema: no row to describe the holder
            return None

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None

    # --- SQLite ---------------------------------------------------------------------------------------
    def _lock_file(self) -> None:
        assert self.db.sqlite_path is not None
        path = Path(str(self.db.sqlite_path) + ".lock")
        handle: IO[str] = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise MasterConflict(
                f"AI Factory Engine is already running on {self.db.sqlite_path} ({holder}); "
                "stop it first (one master per database)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.description}, pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def _conflict_message(self, row: dict | None) -> str:
        who = (
            f"node {row['node_id']} (pid {row['pid']} on {row['hostname']})"
            if row is not None
            else "another master"
        )
        return (
            f"{who} is already running as the master of database {self.db.display_url}: one master per "
            "database. Stop it first, or start this machine as a worker (`aifactory worker`)"
        )
