"""Versioned schema migrations (Alembic), and the check that a node's code fits the database's schema.

Only the master (at start, holding the master lease) and `aifactory db upgrade` migrate. Every other
node checks the revision and refuses to start on an older or newer schema with one line naming both,
instead of failing later on a missing column.

Alembic is imported only to migrate: reading the revision and finding the head (from the revision
files themselves) is all the other commands need, and keeps `aifactory status` quick.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from aifactory import __version__
from aifactory.db.database import Database, DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Several nodes may run `upgrade` at once against one PostgreSQL: they take turns on this advisory lock,
# one per schema. It is transaction-scoped, so a failed migration releases it with its rollback and the
# migration's own error is what the person sees (a session lock's unlock would fail in the aborted
# transaction and hide it behind InFailedSqlTransaction).
MIGRATION_LOCK_CLASS = 741_190
_REVISION = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


class SchemaMismatch(DatabaseError):
    """The database's schema revision is not the one this code was written for."""


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@lru_cache(maxsize=1)
def revisions() -> tuple[str, ...]:
    """Every revision this code knows, oldest first (read from the files, without Alembic)."""
    parents: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text()
        found = _REVISION.search(text)
        if found:
            down = _DOWN.search(text)
            parents[found.group(1)] = down.group(1) if down else None
    children = {parent: child for child, parent in parents.items()}
    chain, current = [], children.get(None)
    while current is not None:
        chain.append(current)
        current = children.get(current)
    if len(chain) != len(parents):
        raise RuntimeError(f"the migrations do not form one chain: {sorted(parents)}")
    return tuple(chain)


def head_revision() -> str:
    return revisions()[-1]


def schema_key(conn: Connection) -> int:
    """A 31-bit number for the current PostgreSQL schema: two factories in two schemas of one database
    (the tests do this) have separate locks."""
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    return zlib.crc32(str(schema).encode()) & 0x7FFFFFFF


def _current(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return _current(conn)


def check(db: Database) -> str:
    """The database's revision if it is this code's head; else SchemaMismatch in one line."""
    current, head = current_revision(db), head_revision()
    if current == head:
        return current
    where = f"database {db.display_url}"
    if current is None:
        raise SchemaMismatch(
            f"{where} has no schema yet: start the master (`aifactory up`) or run `aifactory db upgrade`"
        )
    if current in revisions():
        raise SchemaMismatch(
            f"{where} is at schema revision {current} but aifactory {__version__} needs {head}: the master "
            "upgrades it when it starts (or run `aifactory db upgrade`)"
        )
    raise SchemaMismatch(
        f"{where} is at schema revision {current}, newer than aifactory {__version__} knows (its newest is "
        f"{head}): upgrade aifactory on this machine"
    )


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to `revision`; returns the revision the database was at before."""
    from alembic import command

    config = _config()
    try:
        with db.engine.connect() as conn:
            if db.backend == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:c, :k)"),
                    {"c": MIGRATION_LOCK_CLASS, "k": schema_key(conn)},
                )
            before = _current(conn)  # read under the lock: another node may just have migrated
            if before is not None and before not in revisions():
                raise SchemaMismatch(
                    f"database {db.display_url} is at schema revision {before}, newer than aifactory "
                    f"{__version__} knows: upgrade aifactory on this machine"
                )
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseError(f"cannot migrate database {db.display_url}: {reason}") from None
    return before


def downgrade(db: Database, revision: str) -> None:
    from alembic import command

    config = _config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()
