"""The dashboard: the page at `/` and its scripts and styles under /static, all served by the factory.

Nothing is fetched from elsewhere (no CDN, no web font: the page uses the system's font stacks), so the
dashboard works on a home server with no internet access. The page holds no data itself: its scripts
read the JSON API with the token kept in the browser, so `/` and /static are open (web/auth.py
OPEN_BY_DESIGN). The API's index, which `/` used to answer, is at /api.

Every dashboard response carries a Content-Security-Policy without 'unsafe-inline': scripts and styles
come only from this origin, and crawled text that slipped into markup could not run. The scripts
themselves never build HTML from data (textContent only), which is the first line of defence.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[1] / "static"
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new version of the factory serves a new page at once
}

router = APIRouter(tags=["dashboard"])


@router.get("/", response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
def page() -> FileResponse:
    """The dashboard. The API's index (this node, what to read) is at /api."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


class DashboardFiles(StaticFiles):
    """The static files with the dashboard's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", DashboardFiles(directory=STATIC), name="static")
