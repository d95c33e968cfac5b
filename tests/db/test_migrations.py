"""Migrations take an empty database to the head revision, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from aifactory.db import Database, migrate
from aifactory.db.schema import metadata

FOUNDATION_TABLES = {"nodes", "engine_state", "events", "counters", "system_config"}


def test_empty_database_is_upgraded_to_head(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.current_revision(db) is None
        assert migrate.upgrade(db) is None
        assert migrate.current_revision(db) == migrate.head_revision()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert tables >= FOUNDATION_TABLES
        # the query-side schema matches what the migrations created, column for column
        inspector = sa.inspect(db.engine)
        for table in metadata.sorted_tables:
            created = {column["name"] for column in inspector.get_columns(table.name)}
            assert created == set(table.columns.keys()), table.name
        assert migrate.upgrade(db) == migrate.head_revision()  # a second run changes nothing
    finally:
        db.dispose()


def test_downgrade_to_empty_and_back(db: Database) -> None:
    migrate.downgrade(db, "base")
    assert not FOUNDATION_TABLES & set(sa.inspect(db.engine).get_table_names())
    migrate.upgrade(db)
    assert set(sa.inspect(db.engine).get_table_names()) >= FOUNDATION_TABLES


def test_nodes_starting_together_migrate_once(db_url: str) -> None:
    """Several processes may run `upgrade` at the same moment; all succeed and the schema is whole."""
    errors: list[BaseException] = []

    def upgrade() -> None:
        database = Database(db_url)
        try:
            migrate.upgrade(database)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    db = Database(db_url)
    assert migrate.current_revision(db) == migrate.head_revision()
    db.dispose()
