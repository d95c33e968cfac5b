"""The FastAPI application: the base API and the generation APIs; the dashboard joins as a router.

Route handlers that touch the database are plain `def`, so FastAPI runs them in its thread pool and
the event loop stays free for other requests. Every request first passes the Host and body-size
checks (web/guards.py); read routers are included with `ReadAccess`, admin routers carry `AdminOnly`
themselves (web/auth.py), and a test makes sure no route escapes both.

While the server runs, the export job runner (export/jobs.py) takes queued exports one at a time and
runs each in a process of its own; it starts and stops with the server (the lifespan below).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from aifactory import __version__
from aifactory.export.jobs import JobRunner
from aifactory.web import serving
from aifactory.web.auth import ReadAccess
from aifactory.web.context import AppContext
from aifactory.web.guards import RequestGuards
from aifactory.web.routes import (
    control,
    dashboard,
    datasets,
    documents,
    evals,
    exports,
    frontier,
    generate,
    models,
    ollama_api,
    openai_api,
    policies,
    status,
    stream,
    tokenize,
    training,
)


def create_app(ctx: AppContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = JobRunner(ctx.settings, ctx.db, ctx.node.node_id)
        runner.start()
        app.state.export_runner = runner
        try:
            yield
        finally:
            runner.stop(timeout=ctx.settings.engine_stop_timeout_sec + 10)

    app = FastAPI(
        title="AI Factory Engine",
        version=__version__,
        description="Collects web text, trains its own language model continuously, and serves it.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(RequestGuards, settings=ctx.settings)
    app.include_router(status.open_router)
    read_routers = (status.router, training.router, policies.router, datasets.router, documents.router)
    read_routers += (frontier.router, stream.router)  # the dashboard's reads (issue #16)
    for router in (*read_routers, exports.router):
        app.include_router(router, dependencies=[ReadAccess])
    app.include_router(control.router)
    app.include_router(policies.admin_router)
    app.include_router(exports.admin_router)
    for router in (evals.router, models.router):
        app.include_router(router, dependencies=[ReadAccess])
    app.include_router(evals.admin_router)
    app.include_router(models.admin_router)
    # The generation APIs (docs/serving.md): open by default, API_KEYS when set (web/auth.py ApiKey).
    app.include_router(generate.router)
    app.include_router(openai_api.router)
    app.include_router(tokenize.router)
    app.include_router(ollama_api.router)
    app.include_router(ollama_api.api)
    serving.install(app, ctx)
    dashboard.install(app)  # `/` and /static (web/routes/dashboard.py)
    return app
