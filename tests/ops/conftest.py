"""Fixtures for the operations tests: whole databases of their own (pg_dump and pg_restore work on a
database, not on the per-test schema the shared fixtures give) and a distribution server (version.json)."""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_URL, _no_postgres


@pytest.fixture
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """`new_database(name)`: the URL of an empty database, SQLite or PostgreSQL as the test is
    parametrized (`backend`), dropped after the test."""
    backend = request.node.callspec.params["backend"]
    created: list[str] = []
    if backend == "postgresql":
        if not PG_URL:
            _no_postgres("AIFACTORY_TEST_DATABASE_URL is not set")
        try:
            psycopg.connect(PG_URL, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            _no_postgres(f"PostgreSQL at {PG_URL} is unreachable: {exc}")

    def make(name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'{name}.db'}"
        database = f"b_{name}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        created.append(database)
        parts = urllib.parse.urlsplit(PG_URL)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))

    yield make
    if created:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for database in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves): a distribution server."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
