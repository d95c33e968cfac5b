"""Every route is guarded (admin token for changes, read token for reads) or open by design, and says so.

The first test walks `app.routes`: a route added without a guard fails the suite until it gets one or
is listed in `aifactory.web.auth.OPEN_BY_DESIGN` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

from aifactory.cluster.node import Node
from aifactory.db import Database
from aifactory.web.app import create_app
from aifactory.web.auth import OPEN_BY_DESIGN, is_open_by_design, require_admin, require_read
from aifactory.web.context import AppContext

ADMIN = "correct horse battery staple"
READ = "a token for the dashboard on the LAN"
READ_METHODS = {"GET", "HEAD"}
PATH_VALUES = {"node_id": "api-node", "engine": "ticker"}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """These checks are about HTTP, not the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'factory.db'}"


def calls(dependant: Dependant) -> set[Callable[..., Any]]:
    found = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= calls(sub)
    return found


def flat_routes(app: FastAPI) -> list[tuple[Any, Any]]:
    """(route, what serves it) for every route, each with the dependencies its routers add. Newer
    FastAPI keeps included routers as such in `app.routes` and resolves them through route contexts."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:
        return [(route, route) for route in app.routes]
    return [(context.original_route, context) for context in contexts(app.routes)]


def unguarded(app: FastAPI) -> list[str]:
    """Routes that change state without the admin guard, or read without a guard, and are not listed."""
    out = []
    for route, effective in flat_routes(app):
        path = getattr(effective, "path", "")
        if is_open_by_design(path):
            continue
        if isinstance(route, APIRoute):
            guards = calls(effective.dependant)
            for method in sorted(effective.methods):
                needed = {require_admin, require_read} if method in READ_METHODS else {require_admin}
                if not guards & needed:
                    out.append(f"{method} {path}")
        elif isinstance(route, APIWebSocketRoute):
            if not calls(effective.dependant) & {require_admin, require_read}:
                out.append(f"WEBSOCKET {path}")
        else:  # a plain Starlette route or mount (static files...): it must be listed
            out.append(f"{type(route).__name__} {path}")
    return out


def app_for(db: Database, make_settings: Any, **settings: Any) -> FastAPI:
    values = make_settings(database_url=db.url, **settings)
    return create_app(AppContext(values, db, Node(values, db, [], role="master", node_id="api-node")))


def test_every_route_is_guarded_or_open_by_design(db: Database, make_settings: Any) -> None:
    app = app_for(db, make_settings)
    assert unguarded(app) == []
    assert all(reason for reason in OPEN_BY_DESIGN.values())  # each opening says why


def test_the_walk_catches_a_route_added_without_a_guard(db: Database, make_settings: Any) -> None:
    app = app_for(db, make_settings)

    @app.post("/api/forgotten")
    def forgotten() -> dict:
        return {}

    @app.get("/api/peek")
    def peek() -> dict:
        return {}

    assert unguarded(app) == ["POST /api/forgotten", "GET /api/peek"]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)


def test_tokens_are_enforced_on_every_route_of_a_running_server(
    serve: Any, db: Database, make_settings: Any
) -> None:
    client, _ = serve(admin_api_token=ADMIN, admin_read_token=READ)
    routes = [
        (method, concrete(effective.path))
        for route, effective in flat_routes(app_for(db, make_settings))  # the served app's routes
        if isinstance(route, APIRoute)
        for method in sorted(effective.methods)
    ]
    assert len(routes) >= 15
    for method, path in routes:

        def call(token: str | None, method: str = method, path: str = path) -> int:
            headers = {"x-admin-token": token} if token is not None else {}
            body = {"action": "stop"} if method == "POST" else None
            return client.request(method, path, json=body, headers=headers).status_code

        if is_open_by_design(path):
            assert call(None) != 401, path
        elif method in READ_METHODS:
            assert call(None) == 401 and call("wrong") == 401, path
            assert call(READ) != 401 and call(ADMIN) != 401, path
        else:
            assert call(None) == 401 and call("wrong") == 401 and call(READ) == 401, path
            assert call(ADMIN) != 401, path
    assert client.get("/api/status", headers={"x-admin-token": READ}).json()["node"]["node_id"] == "api-node"


def test_without_a_read_token_reads_are_open_and_changes_still_need_the_admin_token(serve: Any) -> None:
    client, _ = serve(admin_api_token=ADMIN)
    assert client.get("/api/status").status_code == 200
    config = client.get("/api/runtime-config").json()
    assert config["admin_token_required"] is True and config["read_token_required"] is False
    assert client.post("/api/control", json={"action": "stop"}).status_code == 401
    assert client.post("/api/control", params={"token": ADMIN}, json={"action": "stop"}).status_code == 401
    reply = client.post("/api/control", json={"action": "stop"}, headers={"x-admin-token": ADMIN})
    assert reply.status_code == 200


def test_the_tokens_are_openapi_security_schemes(serve: Any) -> None:
    client, _ = serve(admin_api_token=ADMIN, admin_read_token=READ)
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["AdminToken"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-admin-token",
        "description": schemes["AdminToken"]["description"],
    }
    assert schemes["ReadToken"]["name"] == "x-admin-token"
    assert schema["paths"]["/api/control"]["post"]["security"] == [{"AdminToken": []}]
    assert schema["paths"]["/api/status"]["get"]["security"] == [{"ReadToken": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
