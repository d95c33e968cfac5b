"""The FastAPI application: the base API now; the dashboard, chat and model APIs join as routers.

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
from aifactory.web.auth import ReadAccess
from aifactory.web.context import AppContext
from aifactory.web.guards import RequestGuards
from aifactory.web.routes import control, datasets, exports, policies, status, training


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
    for router in (status.router, training.router, policies.router, datasets.router, exports.router):
        app.include_router(router, dependencies=[ReadAccess])
    app.include_router(control.router)
    app.include_router(policies.admin_router)
    app.include_router(exports.admin_router)
    return app
