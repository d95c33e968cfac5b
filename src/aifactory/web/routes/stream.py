"""GET /api/events/stream: the dashboard's one live feed (Server-Sent Events), instead of a dozen pollers.

Every DASHBOARD_PUSH_SEC the stream reads a few small things in the thread pool (the event loop never
waits on the database) and sends only what changed:
    state    the status (engines, counters, cluster), when it differs from the last one sent
    load     CPU/RAM and the corpus counters: one chart point per tick
    metrics  new training rows and per-language validation rows (by id: an index walk)
    log      new events (by id)
The first message is `hello` with the recent history of `load` points, so the charts start filled.

It is read-guarded like every read: the page's fetch-based reader sends the token in the x-admin-token
header, never in the URL. A client that does not ask for `text/event-stream` gets one snapshot as JSON
and the connection ends (scripts, and the API index walk, read it once). The browser reconnects by
itself after a dropped connection; the stream also ends after STREAM_MAX_SEC (10 min) so no proxy
holds one forever.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psutil
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from aifactory.db.schema import training_metrics, validation_metrics
from aifactory.web.context import AppContext, Ctx
from aifactory.web.routes.status import get_status

router = APIRouter(tags=["dashboard"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HISTORY_POINTS = 720  # load points kept in memory for a new page's charts (24 min at 2 s)
STREAM_MAX_SEC = 600  # then the stream ends and the page reconnects
ROWS_PER_TICK = 500
CORPUS_COUNTERS = ("docs.stored", "docs.chars", "docs.replaced")


class LoadHistory:
    """The last HISTORY_POINTS load points of this web process, shared by every open page."""

    def __init__(self) -> None:
        self.points: collections.deque[dict[str, float]] = collections.deque(maxlen=HISTORY_POINTS)

    def add(self, point: dict[str, float], min_gap: float) -> None:
        if not self.points or point["ts"] - self.points[-1]["ts"] >= min_gap * 0.9:
            self.points.append(point)


def history_of(request: Request) -> LoadHistory:
    app = request.app
    if not hasattr(app.state, "load_history"):
        app.state.load_history = LoadHistory()
    return app.state.load_history


def load_point(totals: dict[str, int], system: dict[str, Any] | None = None) -> dict[str, float]:
    """CPU, RAM and the corpus counters now. CPU is the status's own reading when there is one: a
    second psutil.cpu_percent right after the first measures a few microseconds (0 or 100)."""
    if system is None:
        system = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "ram_percent": psutil.virtual_memory().percent,
        }
    point = {"ts": time.time(), "cpu": float(system["cpu_percent"]), "ram": float(system["ram_percent"])}
    point.update({name: float(totals.get(name, 0)) for name in CORPUS_COUNTERS})
    return point


def new_rows(ctx: AppContext, table: sa.Table, after_id: int) -> list[dict[str, Any]]:
    query = sa.select(table).where(table.c.id > after_id).order_by(table.c.id).limit(ROWS_PER_TICK)
    with ctx.db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def last_id(ctx: AppContext, table: sa.Table) -> int:
    with ctx.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0)


class Cursor:
    """What one stream has sent so far."""

    def __init__(self) -> None:
        self.state = ""
        self.event_id = -1  # -1: not started (the first tick sends only the newest events)
        self.metric_id = -1
        self.validation_id = -1


def tick(ctx: AppContext, cursor: Cursor) -> tuple[list[tuple[str, Any]], dict[str, float]]:
    """One round of reads; returns the messages to send and this tick's load point."""
    out: list[tuple[str, Any]] = []
    status = get_status(ctx).model_dump()
    recent_events = status.pop("events")
    load = status.pop("system")
    fingerprint = json.dumps(status["engines"], sort_keys=True, default=str) + json.dumps(
        [status["counters"], status["is_running"], status["cluster"]], sort_keys=True
    )
    if fingerprint != cursor.state:
        cursor.state = fingerprint
        out.append(("state", {**status, "system": load}))
    point = load_point(status["counters"], load)
    out.append(("load", point))
    if cursor.metric_id < 0:  # the page reads the history from /api/metrics/training; only new rows here
        cursor.metric_id = last_id(ctx, training_metrics)
        cursor.validation_id = last_id(ctx, validation_metrics)
    rows = new_rows(ctx, training_metrics, cursor.metric_id)
    if rows:
        cursor.metric_id = rows[-1]["id"]
    validation = new_rows(ctx, validation_metrics, cursor.validation_id)
    if validation:
        cursor.validation_id = validation[-1]["id"]
    if rows or validation:
        out.append(("metrics", {"training": rows, "validation": validation}))
    fresh = [e for e in reversed(recent_events) if e["id"] > cursor.event_id]
    if fresh:
        cursor.event_id = fresh[-1]["id"]
        out.append(("log", fresh))
    return out, point


def sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def snapshot(ctx: AppContext) -> dict[str, Any]:
    status = get_status(ctx).model_dump()
    return {"state": status, "load": load_point(status["counters"], status["system"])}


@router.get(
    "/api/events/stream",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def event_stream(request: Request, ctx: Ctx) -> Any:
    """Live updates for the dashboard: `hello`, then `state`, `load`, `metrics` and `log` events."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        return await anyio.to_thread.run_sync(snapshot, ctx)
    history = history_of(request)
    every = ctx.settings.dashboard_push_sec

    async def messages() -> AsyncIterator[str]:
        cursor = Cursor()
        yield "retry: 3000\n\n" + sse("hello", {"node_id": ctx.node.node_id, "load": list(history.points)})
        started = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_SEC and not await request.is_disconnected():
            try:
                out, point = await anyio.to_thread.run_sync(tick, ctx, cursor)
            except Exception as exc:  # the database is away: say so, keep the stream, try again
                out, point = [("error", {"message": f"{type(exc).__name__}: {exc}"[:300]})], None
            if point is not None:
                history.add(point, every)
            for kind, data in out:
                yield sse(kind, data)
            await asyncio.sleep(every)

    return StreamingResponse(messages(), media_type="text/event-stream", headers=SSE_HEADERS)
