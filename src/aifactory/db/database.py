"""One database interface over SQLite (the embedded default) and PostgreSQL (shared by several nodes).

Queries are written once with SQLAlchemy Core; the few places where the two engines differ (upserts,
the database clock, row locking) are answered here. Times are stored as epoch seconds taken from the
*database's* clock, so nodes with skewed clocks still agree on who is stale.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from aifactory.settings import mask_url

_PG_CONNECT_ARGS = {"connect_timeout": 10, "application_name": "aifactory"}
CLOCK_REFRESH_SEC = 30.0  # how often this machine's clock offset from the database's is read


class DatabaseError(Exception):
    """The database cannot be reached or used; the message is meant for the person running the node."""


def sqlalchemy_url(url: str) -> str:
    """Map the URLs users write (postgresql://, postgres://) onto the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


class Database:
    """A pooled connection to the factory's database.

    `db.begin()` gives a transaction (on SQLite it takes the write lock at once, `BEGIN IMMEDIATE`, so
    two writers queue on the busy timeout instead of failing with "database is locked" half-way).
    `db.read()` gives a connection for reads that never blocks writers.
    """

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int | None = None) -> None:
        """`pool_size` connections stay open; `max_overflow` more (default: as many again) at peak. A
        single-threaded process (an encoder, a pool worker) passes pool_size=1, max_overflow=0."""
        self.url = url
        # The node this process runs as (set when the node starts): counters it adds go to its rows.
        self.node_id = ""
        overflow = pool_size if max_overflow is None else max_overflow
        self.display_url = mask_url(url)
        self.backend = "postgresql" if url.startswith(("postgres", "postgresql")) else "sqlite"
        path = sqlite_path(url)
        if self.backend == "sqlite":
            if path is None:
                raise DatabaseError(f"unsupported SQLite URL {url!r}: use sqlite:///PATH")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
                pool_size=pool_size,
                max_overflow=overflow,
            )
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = sa.create_engine(
                sqlalchemy_url(url),
                pool_size=pool_size,
                max_overflow=overflow,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args=_PG_CONNECT_ARGS,
            )
        self.sqlite_path = path
        self._clock_offset = 0.0
        self._clock_read_at = -CLOCK_REFRESH_SEC

    # --- connections ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_read_only=True)
            try:
                yield conn
            finally:
                conn.rollback()

    def check(self) -> None:
        """Raise DatabaseError with a one-line reason if the database cannot be reached."""
        try:
            with self.read() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise DatabaseError(f"cannot connect to database {self.display_url}: {reason}") from None

    def dedicated(self, application_name: str = "aifactory") -> Connection:
        """A PostgreSQL connection of its own (not from the pool), in autocommit mode, for a session-level
        lock held as long as the process lives. TCP keepalives let the server notice a dead client (power
        cut, cable) within a minute instead of hours, so its locks are released."""
        engine = sa.create_engine(
            sqlalchemy_url(self.url),
            poolclass=sa.pool.NullPool,
            connect_args={
                **_PG_CONNECT_ARGS,
                "application_name": application_name[:63],
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        )
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        self.engine.dispose()

    # --- dialect differences --------------------------------------------------------------------------
    def now(self) -> sa.ColumnElement[float]:
        """The database clock in epoch seconds, as an SQL expression."""
        if self.backend == "postgresql":
            return sa.func.extract("epoch", sa.func.clock_timestamp()).cast(sa.Float)
        return (sa.func.julianday("now") - 2440587.5) * 86400.0

    def now_value(self, conn: Connection) -> float:
        return float(conn.execute(sa.select(self.now())).scalar_one())

    def clock(self) -> float:
        """The database clock as a number, without a round trip: this machine's clock plus its offset
        from the database's, read every CLOCK_REFRESH_SEC (to within half a round trip).

        Queries bind this value instead of calling the clock function inside WHERE: a comparison with
        a volatile function (PostgreSQL's clock_timestamp()) cannot use an index, a bound value can."""
        now = time.time()
        if self.backend == "sqlite":
            return now  # the same machine, the same clock
        if now - self._clock_read_at >= CLOCK_REFRESH_SEC:
            with self.read() as conn:
                before = time.time()
                database_now = self.now_value(conn)
                after = time.time()
            self._clock_offset = database_now - (before + after) / 2
            self._clock_read_at = after
            now = time.time()
        return now + self._clock_offset

    def upsert(
        self,
        conn: Connection,
        table: sa.Table,
        values: dict[str, Any],
        keys: list[str],
        update: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE.

        `update(excluded)` returns the columns to set on conflict (`excluded` is the row that failed to
        insert); by default every non-key column given is overwritten. An empty dict means DO NOTHING."""
        # Imported here: the PostgreSQL dialect package loads every driver's module (a quick
        # `aifactory status` on SQLite never needs them).
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if self.backend == "postgresql" else sqlite
        stmt = dialect.insert(table).values(**values)
        if update is None:
            changes = {name: stmt.excluded[name] for name in values if name not in keys}
        else:
            changes = update(stmt.excluded)
        if changes:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changes)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling is disabled (isolation_level=None) so we choose the BEGIN:
    # writers take the lock up front; readers use a deferred transaction that never blocks a writer.
    if conn.get_execution_options().get("sqlite_read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
