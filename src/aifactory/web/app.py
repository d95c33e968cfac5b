"""The FastAPI application: the base API and the generation APIs; the dashboard joins as a router.

Route handlers that touch the database are plain `def`, so FastAPI runs them in its thread pool and
the event loop stays free for other requests. Every request first passes the Host and body-size
checks (web/guards.py); read routers are included with `ReadAccess`, admin routers carry `AdminOnly`
themselves (web/auth.py), and a test makes sure no route escapes both.
"""

from __future__ import annotations

from fastapi import FastAPI

from aifactory import __version__
from aifactory.web import serving
from aifactory.web.auth import ReadAccess
from aifactory.web.context import AppContext
from aifactory.web.guards import RequestGuards
from aifactory.web.routes import (
    control,
    datasets,
    documents,
    generate,
    ollama_api,
    openai_api,
    policies,
    status,
    tokenize,
    training,
)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="AI Factory Engine",
        version=__version__,
        description="Collects web text, trains its own language model continuously, and serves it.",
    )
    app.state.ctx = ctx
    app.add_middleware(RequestGuards, settings=ctx.settings)
    app.include_router(status.open_router)
    for router in (status.router, training.router, policies.router, datasets.router, documents.router):
        app.include_router(router, dependencies=[ReadAccess])
    app.include_router(control.router)
    app.include_router(policies.admin_router)
    # The generation APIs (docs/serving.md): open by default, API_KEYS when set (web/auth.py ApiKey).
    app.include_router(generate.router)
    app.include_router(openai_api.router)
    app.include_router(tokenize.router)
    app.include_router(ollama_api.router)
    app.include_router(ollama_api.api)
    serving.install(app, ctx)
    return app
