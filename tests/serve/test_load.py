"""Many clients at once: simultaneous streams, a full queue, clients that leave, a crashing engine."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifactory.cluster import engine_state as engine_db
from aifactory.cluster.node import Node
from aifactory.db import Database, migrate
from aifactory.train import sharing
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.conftest import wait_for
from tests.serve.conftest import Live, WebServer, settings_for, start_live, wait_until_serving
from tests.serve.helpers import make_tokenizer, save_checkpoint

BAN = {"2": -100, "7": -100}  # no end of text: each stream runs to its max_tokens


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """4 decoding slots and 12 waiting places; answers of up to 4,000 tokens (seconds each)."""
    live, web = start_live(tmp_path_factory.mktemp("busy"), context=4096, max_generate_tokens=4000)
    yield live
    web.stop()
    live.node.stop(timeout=20)
    live.db.dispose()


class Stream(threading.Thread):
    """A streaming /v1/completions request read in a thread; `close()` disconnects it."""

    def __init__(self, live: Live, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.live, self.max_tokens = live, max_tokens
        self.text, self.finish, self.error = "", None, None
        self.tokens = 0
        self.started = threading.Event()
        self._client = httpx.Client(timeout=120)
        self._response: httpx.Response | None = None

    def run(self) -> None:
        body = {
            "model": "latest",
            "prompt": "Once",
            "max_tokens": self.max_tokens,
            "stream": True,
            "logit_bias": BAN,
        }
        try:
            with self._client.stream("POST", f"{self.live.url}/v1/completions", json=body) as response:
                self._response = response
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    try:
                        chunk = json.loads(line[6:])
                    except ValueError:  # the connection was closed in the middle of a line
                        break
                    if "error" in chunk:
                        self.error = chunk["error"]
                        continue
                    choice = chunk["choices"][0]
                    self.tokens += 1 if choice["text"] else 0
                    self.text += choice["text"]
                    self.finish = choice["finish_reason"] or self.finish
                    self.started.set()
        except httpx.HTTPError as exc:
            self.error = self.error or str(exc)
        finally:
            self.started.set()

    def close(self) -> None:
        self._client.close()  # the connection goes away mid-stream, as when a browser tab is closed


def load(live: Live) -> dict[str, Any]:
    return sharing.read_load(live.settings)


def test_sixteen_simultaneous_streams_all_complete(busy: Live) -> None:
    streams = [Stream(busy, 40) for _ in range(16)]
    for stream in streams:
        stream.start()
    for stream in streams:
        stream.join(120)
    assert [(s.finish, s.error) for s in streams] == [("length", None)] * 16
    assert all(s.text for s in streams)


def test_a_full_queue_answers_503_and_a_client_that_leaves_frees_its_place(busy: Live) -> None:
    streams = [Stream(busy, 4000) for _ in range(16)]
    try:
        for stream in streams:
            stream.start()
        wait_for(
            lambda: (load(busy).get("in_flight"), load(busy).get("active")) == (16, 4),
            timeout=60,
            what="16 requests in flight, 4 of them decoding",
        )
        assert load(busy)["queued"] == 12
        extra = httpx.post(f"{busy.url}/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=30)
        assert extra.status_code == 503 and extra.headers["retry-after"] == "2"
        assert (
            extra.json()["error"]["type"] == "unavailable_error"
            and "queue is full" in extra.json()["error"]["message"]
        )
        native = httpx.post(f"{busy.url}/api/generate", json={"prompt": "x", "rag": False}, timeout=30)
        assert native.status_code == 503 and native.headers["retry-after"] == "2"
        active = next(s for s in streams if s.tokens)  # one that is decoding right now
        active.close()
        # A waiting request takes the freed slot at once (the closed one's answer was far from done).
        wait_for(
            lambda: (load(busy).get("in_flight"), load(busy).get("active")) == (15, 4),
            timeout=30,
            what="the closed stream to be dropped and its slot taken",
        )
        body = {"prompt": "x", "max_tokens": 1, "stream": True}
        with httpx.stream("POST", f"{busy.url}/v1/completions", json=body, timeout=30) as accepted:
            assert accepted.status_code == 200  # there is room in the queue again
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: load(busy).get("in_flight") == 0, timeout=60, what="every closed stream to be dropped")


def test_requests_in_flight_get_a_clear_error_when_the_engine_dies_and_it_comes_back(busy: Live) -> None:
    stream = Stream(busy, 4000)
    stream.start()
    assert stream.started.wait(60) and stream.tokens
    runner = busy.node.runners["inference"]
    os.kill(runner._process.pid, signal.SIGKILL)
    stream.join(60)
    assert stream.error is not None and "inference process stopped" in stream.error["message"]
    assert stream.error["type"] == "unavailable_error"
    wait_until_serving(busy.url, timeout=120)  # the node restarted it
    state = engine_db.load(busy.db, busy.node.node_id, "inference")
    assert state is not None and state["restarts"] >= 1


def test_without_a_model_or_an_engine_the_answer_says_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    db = Database(settings.resolved_database_url())
    migrate.upgrade(db)
    node = Node(settings, db, [], role="master", node_id="empty-node")
    node.start()
    engine_db.ensure(db, "empty-node", ["trainer", "inference"])
    engine_db.report(
        db, "empty-node", "trainer", phase="waiting", detail="no training data yet: 12 documents"
    )
    web = WebServer(create_app(AppContext(settings, db, node)))
    try:
        reply = httpx.post(f"{web.url}/api/generate", json={"prompt": "hi"})
        assert reply.status_code == 503 and "training has not produced" in reply.json()["message"]
        assert "no training data yet: 12 documents" in reply.json()["message"]
        assert "Ignite" in reply.json()["message"]
        assert httpx.get(f"{web.url}/v1/models").json() == {"object": "list", "data": []}
        assert httpx.get(f"{web.url}/ollama/api/tags").json() == {"models": []}
        save_checkpoint(settings.data_dir, make_tokenizer(settings.data_dir), step=1)
        reply = httpx.post(
            f"{web.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert (
            reply.status_code == 503 and "inference engine is not running" in reply.json()["error"]["message"]
        )
        assert "POST /api/engines/inference/control" in reply.json()["error"]["message"]
    finally:
        web.stop()
        node.stop(timeout=10)
        db.dispose()


def test_a_client_that_gives_up_on_a_long_answer_frees_its_slot(busy: Live) -> None:
    body = {"prompt": "x", "max_tokens": 4000, "logit_bias": BAN}  # not streamed: one answer at the end
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{busy.url}/v1/completions", json=body, timeout=httpx.Timeout(30, read=1.0))
    wait_for(lambda: load(busy).get("in_flight") == 0, timeout=30, what="the abandoned request to be dropped")
