"""Shared fixtures: a migrated database on SQLite and, when configured, on PostgreSQL.

PostgreSQL tests need AIFACTORY_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test).
Each test gets its own schema there, so tests never see each other's rows and child processes reach
the same schema through the URL. With AIFACTORY_REQUIRE_POSTGRES=1 (set by .ci/run) a missing or
unreachable PostgreSQL fails the run instead of skipping those tests.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aifactory.db import Database, migrate
from aifactory.settings import Settings

PG_URL = os.environ.get("AIFACTORY_TEST_DATABASE_URL", "")

# Tests never reach the internet: the sources that default to public APIs (Wikipedia, arXiv, HN and
# feeds) are off for every node and subprocess a test starts, unless the test turns one on with a
# local stand-in.
for _name in (
    "ENABLE_WIKIPEDIA_COLLECTOR",
    "ENABLE_ARXIV_COLLECTOR",
    "ENABLE_RSS_COLLECTOR",
    "ENABLE_NEWS_COLLECTOR",
    "ENABLE_AUTO_DISCOVERY",
):
    os.environ[_name] = "0"
REQUIRE_PG = os.environ.get("AIFACTORY_REQUIRE_POSTGRES") == "1"


def _no_postgres(reason: str) -> None:
    if REQUIRE_PG:
        pytest.fail(f"PostgreSQL tests are required (AIFACTORY_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    if not PG_URL:
        _no_postgres("AIFACTORY_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _no_postgres(f"PostgreSQL at {PG_URL} is unreachable: {exc}")
    separator = "&" if "?" in PG_URL else "?"
    options = urllib.parse.quote(f"-csearch_path={schema}")
    yield f"{PG_URL}{separator}options={options}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'factory.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database (empty tables)."""
    database = Database(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Settings for tests: no .env, data under tmp_path, fast heartbeats; keywords override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "node_heartbeat_interval_sec": 0.2,
            "node_offline_window_sec": 5,
            "auto_tune": False,
            # Starlette's TestClient sends `Host: testserver`; a real server trusts only its own names.
            "allowed_hosts": ["testserver"],
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll `condition` until it is truthy (returned) or `timeout` passes (AssertionError naming `what`).
    Tests wait for what they expect with a generous deadline instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
