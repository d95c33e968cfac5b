"""The app on a real uvicorn server on a free port, as a browser or script reaches it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn

from aifactory.cluster.node import Node
from aifactory.db import Database
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.conftest import free_port, wait_for
from tests.sample_engines import TICKER


@pytest.fixture
def serve(db: Database, make_settings) -> Iterator[Callable[..., tuple[httpx.Client, Node]]]:
    """Start the app on a real server; `serve(admin_api_token=...)` returns a client and the node."""
    running: list[tuple[uvicorn.Server, threading.Thread, Node, httpx.Client]] = []

    def start(**overrides: object) -> tuple[httpx.Client, Node]:
        settings = make_settings(database_url=db.url, **overrides)
        node = Node(settings, db, [TICKER], role="master", node_id="api-node")
        node.start()
        port = free_port()
        config = uvicorn.Config(
            create_app(AppContext(settings, db, node)), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=10, what="uvicorn to start")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        running.append((server, thread, node, client))
        return client, node

    yield start
    for server, thread, node, client in running:
        client.close()
        server.should_exit = True
        thread.join(10)
        node.stop(timeout=10)
