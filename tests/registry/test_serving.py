"""Serving follows the registry: the inference engine (its own process, as `aifactory up` starts it)
answers `production` with the promoted version, and with the previous one after a rollback."""

from __future__ import annotations

from typing import Any

import httpx

from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.db.database import Database
from aifactory.registry import gate
from aifactory.web.app import create_app
from aifactory.web.context import AppContext
from tests.conftest import wait_for
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save
from tests.serve.conftest import WebServer
from tests.serve.helpers import SERVE


def answered_by(url: str, model: str) -> str:
    body = {"prompt": "a", "max_tokens": 1, "rag": False, "model": model}
    reply = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    return reply.json().get("checkpoint", "") if reply.status_code == 200 else f"{reply.status_code}"


def test_serving_follows_promotion_and_rollback(make_settings: Any, db: Database) -> None:
    settings = factory_settings(make_settings, db, promotion_min_score=0.0, enable_rag=False, **SERVE)
    build_factory(settings, db)
    first = train_and_save(settings, db, 5)
    assert gate.promote(settings, db, str(first), force=True)["version"] == 1
    specs = [spec for spec in available_engines() if spec.name == "inference"]
    node = Node(settings, db, specs, role="master", node_id="serve-node")
    node.start()
    web = WebServer(create_app(AppContext(settings, db, node)))
    try:
        wait_for(lambda: answered_by(web.url, "production") == "v1", timeout=120, what="v1 served")
        second = train_and_save(settings, db, 10, seed=1)
        assert gate.promote(settings, db, str(second), force=True)["version"] == 2
        wait_for(lambda: answered_by(web.url, "production") == "v2", timeout=120, what="v2 served")
        assert answered_by(web.url, "v1") == "v1"  # a version by name, beside production
        gate.rollback(settings, db)
        wait_for(lambda: answered_by(web.url, "production") == "v1", timeout=120, what="v1 after rollback")
    finally:
        web.stop()
        node.stop(timeout=20)
