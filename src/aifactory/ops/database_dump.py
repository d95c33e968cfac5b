"""The database part of a backup: one consistent copy while the factory writes to it.

SQLite: the online backup API (`sqlite3.Connection.backup`) copies the pages of one read transaction,
so the copy is the database at one instant although writers go on (WAL mode: readers never block them).
PostgreSQL: `pg_dump --format=custom`, which reads everything in one snapshot; `pg_restore` loads it.
The password travels in PGPASSWORD, never on a command line that `ps` shows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database, sqlalchemy_url, sqlite_path

SQLITE_FILE, POSTGRES_FILE = "database.sqlite", "database.pgdump"


class DumpError(Exception):
    """The database cannot be dumped or restored; the message says why and what to do."""


@dataclass
class Pinned:
    """The database as of one instant, held open until written: `summary` (documents, the newest dataset
    version) is read from that instant, and `write(directory)` dumps exactly it."""

    summary: dict[str, Any]
    write: Callable[[Path], Path]


@contextlib.contextmanager
def pinned(url: str) -> Iterator[Pinned]:
    """Fix the database's state now, so what is written later is this state, whatever commits meanwhile.

    SQLite: a read transaction on a connection of its own; the online backup API, called on that
    connection, copies the pages of that transaction (WAL mode: writers go on). PostgreSQL: a REPEATABLE
    READ transaction whose snapshot is exported and handed to pg_dump (--snapshot)."""
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file():
            raise DumpError(f"the SQLite database {path} does not exist")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            source.execute("BEGIN")
            summary = _summary(lambda sql: source.execute(sql).fetchone())

            def write_sqlite(directory: Path) -> Path:
                return _sqlite_copy(source, directory / SQLITE_FILE)

            yield Pinned(summary, write_sqlite)
        finally:
            source.close()
        return
    db = Database(url, pool_size=1)
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            summary = _summary(lambda sql: conn.execute(sa.text(sql)).fetchone())

            def write_postgres(directory: Path) -> Path:
                target = directory / POSTGRES_FILE
                options = ["--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}"]
                _run_pg("pg_dump", url, [*options, f"--file={target}"])
                return target

            yield Pinned(summary, write_postgres)
            conn.rollback()
    finally:
        db.dispose()


def _summary(one: Callable[[str], Any]) -> dict[str, Any]:
    documents = one("SELECT count(*) FROM documents")[0]
    newest = one("SELECT tag FROM dataset_versions ORDER BY id DESC LIMIT 1")
    return {"documents": int(documents), "newest_dataset_version": newest[0] if newest else None}


def check_target(url: str, dump_name: str, *, force: bool) -> None:
    """Refuse a restore into a database of the other kind, or one that is not empty (unless `force`)."""
    path = sqlite_path(url)
    if dump_name == SQLITE_FILE:
        if path is None:
            raise DumpError(
                "the backup holds a SQLite database but DATABASE_URL is PostgreSQL: restore it with an "
                "empty DATABASE_URL (or sqlite:///PATH)"
            )
        if path.exists() and path.stat().st_size > 0 and not force:
            raise DumpError(f"{path} exists already: restore into an empty data directory, or --force")
        return
    if path is not None:
        raise DumpError(
            f"the backup holds a PostgreSQL database but DATABASE_URL is SQLite ({path}): set "
            "DATABASE_URL to an empty PostgreSQL database"
        )
    tables = table_names(url)
    if tables and not force:
        raise DumpError(
            f"the PostgreSQL database {Database(url, pool_size=1).display_url} is not empty "
            f"({len(tables)} tables, e.g. {tables[0]}): restore into an empty database, or --force "
            "to replace its tables"
        )


def load(url: str, dump_file: Path, *, force: bool) -> None:
    """Load `dump_file` into the database at `url` (check_target first)."""
    check_target(url, dump_file.name, force=force)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):  # an old journal must not be replayed onto the restored file
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        _sqlite_backup(dump_file, path)
        return
    clean = ["--clean", "--if-exists"] if table_names(url) else []
    _run_pg(
        "pg_restore",
        url,
        ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", *clean, str(dump_file)],
    )


def table_names(url: str) -> list[str]:
    db = Database(url, pool_size=1)
    try:
        with db.read() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        db.dispose()


def _sqlite_backup(source: Path, target: Path) -> Path:
    if not source.exists():
        raise DumpError(f"the SQLite database {source} does not exist")
    connection = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        return _sqlite_copy(connection, target)
    finally:
        connection.close()


def _sqlite_copy(source: sqlite3.Connection, target: Path) -> Path:
    """The online backup of `source` (of its open read transaction, if it has one) into `target`."""
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)
    destination = sqlite3.connect(temporary)
    try:
        source.backup(destination)
        # One self-contained file: no -wal beside it to lose in a copy.
        destination.execute("PRAGMA journal_mode=DELETE")
    finally:
        destination.close()
    os.replace(temporary, target)
    return target


def _run_pg(program: str, url: str, args: list[str]) -> None:
    if shutil.which(program) is None:
        raise DumpError(
            f"{program} is not installed: install the PostgreSQL client tools "
            "(Debian/Ubuntu: sudo apt-get install postgresql-client; the Docker image has them)"
        )
    parsed = sa.engine.make_url(sqlalchemy_url(url))
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    connection = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    result = subprocess.run(
        [program, f"--dbname={connection}", *args], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise DumpError(
            f"{program} failed on {parsed.render_as_string(hide_password=True)}: "
            f"{message[-1] if message else f'exit status {result.returncode}'}"
        )
