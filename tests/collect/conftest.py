"""Fixtures of the crawler tests (the database fixtures come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory.db import Database, migrate


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database, for tests about timing rather than about the database."""
    database = Database(f"sqlite:///{tmp_path / 'crawl.db'}")
    migrate.upgrade(database)
    yield database
    database.dispose()
