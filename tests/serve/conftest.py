"""A live factory for the API tests: the inference engine in its own process (started by a real node,
as `aifactory up` starts it) and the web app on a real uvicorn server, sharing one data directory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.db import Database, migrate
from aifactory.model.llama import Transformer
from aifactory.settings import Settings
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.conftest import free_port, wait_for
from tests.serve.helpers import SERVE, make_tokenizer, save_checkpoint, tiny_config


@dataclass
class Live:
    url: str
    settings: Settings
    db: Database
    node: Node
    data_dir: Path
    tokenizer: Any
    model: Transformer
    directory: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)


class WebServer:
    """The app on uvicorn in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="uvicorn to start")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    values = dict(
        data_dir=data_dir,
        auto_tune=False,
        node_heartbeat_interval_sec=0.2,
        node_offline_window_sec=5,
        **SERVE,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def wait_until_serving(url: str, timeout: float = 120) -> None:
    """Until the inference engine answers a generation (it loads the model on its first request)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            reply = httpx.post(
                f"{url}/api/generate", json={"prompt": "a", "max_tokens": 1, "rag": False}, timeout=30
            )
            if reply.status_code == 200:
                return
            last = reply.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"the inference engine did not answer within {timeout}s: {last}")


def start_live(root: Path, *, context: int = 256, **overrides: Any) -> tuple[Live, WebServer]:
    data_dir = root / "data"
    tokenizer = make_tokenizer(data_dir)
    config = tiny_config(tokenizer.vocab_size, max_seq_len=context)
    directory, model = save_checkpoint(data_dir, tokenizer, step=10, config=config)
    settings = settings_for(data_dir, **overrides)
    db = Database(settings.resolved_database_url())
    migrate.upgrade(db)
    specs = [spec for spec in available_engines() if spec.name == "inference"]
    node = Node(settings, db, specs, role="master", node_id="serve-node")
    node.start()
    web = WebServer(create_app(AppContext(settings, db, node)))
    live = Live(web.url, settings, db, node, data_dir, tokenizer, model, directory)
    wait_until_serving(web.url)
    return live, web


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One live factory per test module (starting the inference process costs seconds)."""
    live, web = start_live(tmp_path_factory.mktemp("live"))
    yield live
    web.stop()
    live.node.stop(timeout=20)
    live.db.dispose()
