"""Migrations take an empty database to the head revision, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from aifactory.db import Database, DatabaseError, migrate
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


def test_the_head_is_read_from_the_revision_files_as_alembic_reads_it() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert migrate.head_revision() == ScriptDirectory.from_config(config).get_current_head()
    assert migrate.revisions()[0] == "0001"


def test_check_names_both_revisions_in_one_line(db: Database) -> None:
    assert migrate.check(db) == migrate.head_revision()
    migrate.downgrade(db, "0005")
    with pytest.raises(migrate.SchemaMismatch) as older:
        migrate.check(db)
    assert "at schema revision 0005 but aifactory" in str(older.value)
    assert f"needs {migrate.head_revision()}" in str(older.value) and "\n" not in str(older.value)
    migrate.upgrade(db)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(migrate.SchemaMismatch, match=r"newer than aifactory .* upgrade aifactory"):
        migrate.check(db)
    with pytest.raises(migrate.SchemaMismatch, match="revision ffff, newer"):
        migrate.upgrade(db)  # not even the master migrates a schema it does not know


def test_counters_keep_their_totals_across_the_per_node_migration(db: Database) -> None:
    from aifactory.db import counters

    migrate.downgrade(db, "0005")
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO counters (name, value, updated_at) VALUES ('docs', 7, 0)"))
    migrate.upgrade(db)
    counters.add(db, {"docs": 3}, node_id="w1")
    assert counters.get_all(db) == {"docs": 10}
    migrate.downgrade(db, "0005")
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT value FROM counters WHERE name = 'docs'")).scalar() == 10


@pytest.mark.postgres
def test_a_failed_postgresql_migration_shows_its_own_error(pg_url: str) -> None:
    """The migration lock is transaction-scoped: the real error is reported, not InFailedSqlTransaction."""
    db = Database(pg_url)
    try:
        with db.begin() as conn:  # something in the way of the first migration
            conn.execute(sa.text("CREATE TABLE nodes (x integer)"))
        with pytest.raises(DatabaseError) as error:
            migrate.upgrade(db)
        message = str(error.value)
        assert "already exists" in message and "InFailedSqlTransaction" not in message, message
        assert migrate.current_revision(db) is None  # rolled back whole
        with db.begin() as conn:
            conn.execute(sa.text("DROP TABLE nodes"))
        assert migrate.upgrade(db) is None  # and the lock was released with the rollback
    finally:
        db.dispose()
