"""Starting a node: the checks before anything runs, then the master (web + engines) or a worker.

Every problem a person can fix (bad setting, database unreachable, port taken, a second instance)
becomes a StartupError with one clear line, which the CLI prints without a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import uvicorn

from aifactory.db import Database, DatabaseError, migrate
from aifactory.db.nodes import NodeConflict
from aifactory.engine import EngineSpec
from aifactory.engines import available_engines
from aifactory.node import Node
from aifactory.settings import Settings


class StartupError(Exception):
    """A problem that stops a node from starting; the message says what to change."""


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is enough


def check_admin_exposure(settings: Settings) -> None:
    """Refuse to expose control endpoints to the network without a token."""
    has_token = bool(settings.admin_api_token.get_secret_value())
    if settings.admin_api_token_required and not has_token:
        raise StartupError("ADMIN_API_TOKEN_REQUIRED=1 but ADMIN_API_TOKEN is empty: set a token")
    if not settings.host_is_loopback and not has_token and not settings.allow_insecure_admin:
        raise StartupError(
            f"HOST={settings.host} is reachable from the network but ADMIN_API_TOKEN is empty: anyone could "
            "control the factory. Set ADMIN_API_TOKEN (or ALLOW_INSECURE_ADMIN=1 to accept the risk)."
        )


def open_database(settings: Settings, *, upgrade: bool = True) -> Database:
    """Connect, check the connection and (by default) bring the schema up to date."""
    try:
        db = Database(settings.resolved_database_url())
        db.check()
    except DatabaseError as exc:
        raise StartupError(str(exc)) from None
    if upgrade:
        upgrade_schema(db)
    return db


@contextmanager
def opened_database(settings: Settings, *, upgrade: bool = True) -> Iterator[Database]:
    """`open_database` for the length of a command; the pool is closed afterwards."""
    db = open_database(settings, upgrade=upgrade)
    try:
        yield db
    finally:
        db.dispose()


def upgrade_schema(db: Database) -> None:
    try:
        migrate.upgrade(db)
    except DatabaseError as exc:
        raise StartupError(str(exc)) from None


@contextmanager
def instance_lock(db: Database) -> Iterator[None]:
    """One `aifactory up` per SQLite file: a second one gets a clear error instead of lock fights."""
    if db.sqlite_path is None:
        yield
        return
    path = Path(str(db.sqlite_path) + ".lock")
    handle: IO[str] = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StartupError(f"AI Factory Engine is already running on {db.sqlite_path} ({holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (is AI Factory Engine already running?); "
                "stop the other program or set PORT"
            ) from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def start_node(node: Node) -> None:
    try:
        node.start()
    except NodeConflict as exc:
        raise StartupError(str(exc)) from None


def run_master(settings: Settings) -> None:
    """`aifactory up`: the web server on HOST:PORT plus the supervisor with every master engine."""
    from aifactory.web.app import create_app  # the worker never needs the web stack
    from aifactory.web.context import AppContext

    check_admin_exposure(settings)
    db = open_database(settings, upgrade=False)
    try:
        with instance_lock(db):
            upgrade_schema(db)
            sock = bind_socket(settings.host, settings.port)
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            url = f"http://{host}:{settings.port}"
            node = Node(settings, db, available_engines(), role="master", api_url=url)
            start_node(node)
            try:
                app = create_app(AppContext(settings=settings, db=db, node=node))
                config = uvicorn.Config(
                    app, log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=5
                )
                print(
                    f"AI Factory Engine is up: API at {url}/ (status: {url}/api/status, node {node.node_id})",
                    flush=True,
                )
                # uvicorn handles SIGINT/SIGTERM, then re-raises the signal it caught once it has shut
                # down; these handlers absorb that so the engines are still stopped cleanly below.
                _absorb_signals()
                uvicorn.Server(config).run(sockets=[sock])
            finally:
                node.stop()
                sock.close()
    finally:
        db.dispose()


def run_worker(settings: Settings, specs: list[EngineSpec] | None = None) -> None:
    """`aifactory worker`: a collection-only node on a shared PostgreSQL, no web server."""
    if not settings.is_postgres:
        raise StartupError(
            "a worker shares the master's database: set DATABASE_URL=postgresql://USER:PASS@MASTER:5432/DB "
            "(SQLite serves a single node)"
        )
    db = open_database(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = Node(settings, db, available_engines() if specs is None else specs, role="worker")
        start_node(node)
        print(f"AI Factory Engine worker {node.node_id} is up on {db.display_url}", flush=True)
        try:
            while not stop.is_set() and not node.wait_stopped(0.5):
                pass
        finally:
            node.stop()
    finally:
        db.dispose()


def _absorb_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
