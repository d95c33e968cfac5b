"""Versioned schema migrations (Alembic), applied at start-up and by `aifactory db upgrade`."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from aifactory.db.database import Database, DatabaseError

MIGRATIONS = Path(__file__).parent / "migrations"
# Several nodes may start at once against one PostgreSQL: they take turns on this advisory lock.
MIGRATION_LOCK_KEY = 7_411_902_001


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    return str(ScriptDirectory.from_config(_config()).get_current_head())


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to `revision`; returns the revision the database was at before."""
    config = _config()
    try:
        with db.engine.connect() as conn:
            if db.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                before = MigrationContext.configure(conn).get_current_revision()
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                if db.backend == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    conn.commit()
    except sa.exc.OperationalError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseError(f"cannot migrate database {db.display_url}: {reason}") from None
    return before


def downgrade(db: Database, revision: str) -> None:
    config = _config()
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()
