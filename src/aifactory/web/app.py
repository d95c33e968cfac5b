"""The FastAPI application: the base API now; the dashboard, chat and model APIs join as routers.

Route handlers that touch the database are plain `def`, so FastAPI runs them in its thread pool and
the event loop stays free for other requests.
"""

from __future__ import annotations

from fastapi import FastAPI

from aifactory import __version__
from aifactory.web.context import AppContext
from aifactory.web.routes import control, datasets, documents, policies, status, training


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="AI Factory Engine",
        version=__version__,
        description="Collects web text, trains its own language model continuously, and serves it.",
    )
    app.state.ctx = ctx
    app.include_router(status.router)
    app.include_router(control.router)
    app.include_router(training.router)
    app.include_router(policies.router)
    app.include_router(datasets.router)
    app.include_router(documents.router)
    return app
