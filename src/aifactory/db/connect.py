"""Opening the database for a node or a command: connect, check, and make sure the schema fits.

What may happen to the schema depends on who opens it (`schema=`):
  upgrade  migrate to this code's head (the master, holding the master lease; `aifactory db upgrade`)
  create   create the schema in an empty database (nothing can run there yet), else check it: one-off
           commands such as `aifactory crawl` work on a fresh data directory
  check    refuse any other revision than this code's head, in one line (workers)
  none     connect only (`aifactory status` says itself what it finds)
Every failure is a DatabaseError whose message is one line for the person running the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import sqlalchemy as sa

from aifactory.db import migrate
from aifactory.db.database import Database, DatabaseError
from aifactory.settings import Settings, mask_url

SchemaPolicy = Literal["upgrade", "create", "check", "none"]


def open_database(
    settings: Settings,
    *,
    schema: SchemaPolicy = "create",
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> Database:
    url = settings.resolved_database_url()
    try:
        db = Database(url, pool_size=pool_size or settings.database_pool_size, max_overflow=max_overflow)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"invalid DATABASE_URL {mask_url(url)}: {exc}") from None
    try:
        db.check()
        prepare_schema(db, schema)
    except BaseException:
        db.dispose()
        raise
    return db


@contextmanager
def opened_database(settings: Settings, *, schema: SchemaPolicy = "create") -> Iterator[Database]:
    """`open_database` for the length of a command; the pool is closed afterwards."""
    db = open_database(settings, schema=schema)
    try:
        yield db
    finally:
        db.dispose()


def prepare_schema(db: Database, policy: SchemaPolicy) -> None:
    if policy == "upgrade" or (policy == "create" and migrate.current_revision(db) is None):
        migrate.upgrade(db)
    elif policy in ("create", "check"):
        migrate.check(db)
