"""Starting a node: the checks before anything runs, then the master (web + engines) or a worker.

Every problem a person can fix (a bad setting, the database unreachable or on another schema, the port
taken, a second master) becomes one clear line, which the CLI prints without a traceback. The web
stack is imported only here, when a master starts: the other commands stay quick.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading

from aifactory.cluster.membership import NodeConflict
from aifactory.cluster.registry import EngineSpec, available_engines
from aifactory.db.connect import open_database, prepare_schema
from aifactory.settings import Settings


class StartupError(Exception):
    """A problem that stops a node from starting (or keeps it from running); the message says what to do."""


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


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
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


def run_master(settings: Settings, specs: list[EngineSpec] | None = None) -> None:
    """`aifactory up`: the web server on HOST:PORT plus the supervisor with every master engine.

    Order matters: the master lease first (a second master stops here, before touching anything),
    then the schema migration (only a lease holder migrates), the port, and the node's registration."""
    import uvicorn

    from aifactory.cluster.node import Node
    from aifactory.web.app import create_app
    from aifactory.web.context import AppContext

    check_admin_exposure(settings)
    db = open_database(settings, schema="none")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    node = Node(settings, db, available_engines() if specs is None else specs, role="master", api_url=url)
    try:
        try:
            node.take_master_lease()
            prepare_schema(db, "upgrade")
            sock = bind_socket(settings.host, settings.port)
            node.start()
        except NodeConflict as exc:
            raise StartupError(str(exc)) from None
        try:
            app = create_app(AppContext(settings=settings, db=db, node=node))
            config = uvicorn.Config(
                app, log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=5
            )
            server = uvicorn.Server(config)

            def exit_with_node() -> None:  # a node that stopped itself takes its web server with it
                node.wait_stopped()
                server.should_exit = True

            threading.Thread(target=exit_with_node, name="node-watch", daemon=True).start()
            print(
                f"AI Factory Engine is up: dashboard at {url}/ (API: {url}/api, node {node.node_id})",
                flush=True,
            )
            # uvicorn handles SIGINT/SIGTERM, then re-raises the signal it caught once it has shut
            # down; these handlers absorb that so the engines are still stopped cleanly below.
            _absorb_signals()
            server.run(sockets=[sock])
        finally:
            node.stop()
            sock.close()
        if node.lost:
            raise StartupError(f"node {node.node_id} stopped: {node.lost}")
    finally:
        if node.lease is not None:
            node.lease.release()
        db.dispose()


def run_worker(settings: Settings, specs: list[EngineSpec] | None = None) -> None:
    """`aifactory worker`: a collection-only node on a shared PostgreSQL, no web server. It never
    migrates the shared schema (the master does) and refuses to run on any other revision."""
    if not settings.is_postgres:
        raise StartupError(
            "a worker shares the master's database: set DATABASE_URL=postgresql://USER:PASS@MASTER:5432/DB "
            "(SQLite serves a single node)"
        )
    from aifactory.cluster.node import Node

    db = open_database(settings, schema="check")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = Node(settings, db, available_engines() if specs is None else specs, role="worker")
        try:
            node.start()
        except NodeConflict as exc:
            raise StartupError(str(exc)) from None
        print(f"AI Factory Engine worker {node.node_id} is up on {db.display_url}", flush=True)
        try:
            while not stop.is_set() and not node.wait_stopped(0.5):
                pass
        finally:
            node.stop()
        if node.lost:
            raise StartupError(f"node {node.node_id} stopped: {node.lost}")
    finally:
        db.dispose()


def _absorb_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
