"""Fixture web sites for the crawler tests: real HTTP servers on loopback addresses.

A SiteServer runs an aiohttp application in a background thread (its own event loop) on 127.0.0.x and
records every request it gets (time, path, headers), so tests check what the crawler did from the
server's side: what was fetched, how often, how far apart.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hit:
    at: float  # time.monotonic() when the request arrived
    path: str  # path and query
    headers: dict[str, str] = field(default_factory=dict)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SiteServer:
    """An HTTP server on `host` serving `routes` (exact path -> handler) or, failing that, `fallback`."""

    def __init__(
        self,
        routes: dict[str, Handler] | None = None,
        fallback: Handler | None = None,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = dict(routes or {})
        self.ssl_context = ssl_context
        self.fallback = fallback
        self.host = host
        self.port = free_port(host)
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def paths(self) -> list[str]:
        with self._lock:
            return [hit.path for hit in self.hits]

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.path == path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.hits.append(Hit(time.monotonic(), request.path_qs, dict(request.headers)))
        handler = self.routes.get(request.path_qs) or self.routes.get(request.path) or self.fallback
        if handler is None:
            return web.Response(status=404, text="not found")
        return await handler(request)

    def start(self) -> SiteServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(
                app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
            )
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name=f"site-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fixture server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- responses ---------------------------------------------------------------------------------------
def page(
    body: str, *, title: str = "page", status: int = 200, headers: dict[str, str] | None = None
) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        html = f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
        return web.Response(status=status, text=html, content_type="text/html", headers=headers)

    return handler


def text(body: str, *, content_type: str = "text/plain", status: int = 200) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=body, content_type=content_type)

    return handler


def links(*hrefs: str) -> str:
    return " ".join(f'<a href="{href}">link {i}</a>' for i, href in enumerate(hrefs))


def wide_site(pages: int, *, prefix: str = "/p/") -> dict[str, Handler]:
    """A home page linking to `pages` pages; each links home and to its neighbours (duplicates)."""
    routes: dict[str, Handler] = {"/": page(links(*(f"{prefix}{i}" for i in range(pages))), title="home")}
    for i in range(pages):
        routes[f"{prefix}{i}"] = page(
            f"<p>page {i}</p>" + links("/", f"{prefix}{(i + 1) % pages}", f"{prefix}{(i + 7) % pages}#frag"),
            title=f"page {i}",
        )
    return routes


def robots(body: str) -> Handler:
    return text(body)
