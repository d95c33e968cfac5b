"""The crawl frontier for the dashboard (hosts with work queued, the next URLs due) and the storage used.

Both reads are bounded: hosts are few next to URLs, and the queued URLs come from an index walk on
(state, next_fetch_at), so the panel costs the same with a thousand URLs or a hundred million.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from aifactory.db.schema import frontier, hosts
from aifactory.web.context import Ctx

router = APIRouter(tags=["documents"])


class FrontierHost(BaseModel):
    origin: str
    source: str
    has_work: bool = Field(description="URLs of this host are queued.")
    pages_fetched: int
    urls_known: int
    crawl_delay: float | None = Field(description="From robots.txt, seconds.")
    robots_status: int | None = Field(description="HTTP status of its robots.txt.")


class QueuedUrl(BaseModel):
    url: str
    origin: str
    depth: int
    source: str
    attempts: int
    next_fetch_at: float | None


class FrontierResponse(BaseModel):
    hosts: list[FrontierHost] = Field(description="Hosts with queued work first, then by URLs known.")
    queued: list[QueuedUrl] = Field(description="The next URLs due, soonest first.")


@router.get("/api/frontier", response_model=FrontierResponse)
def get_frontier(
    ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500, description="Rows of each list.")] = 50
) -> FrontierResponse:
    """Queued hosts and URLs: what the crawler will fetch next."""
    host_query = (
        sa.select(hosts)
        .order_by(hosts.c.has_work.desc(), hosts.c.urls_known.desc(), hosts.c.origin)
        .limit(limit)
    )
    url_query = (
        sa.select(frontier)
        .where(frontier.c.state == "queued")
        .order_by(frontier.c.next_fetch_at)
        .limit(limit)
    )
    with ctx.db.read() as conn:
        host_rows = [dict(row._mapping) for row in conn.execute(host_query)]
        url_rows = [dict(row._mapping) for row in conn.execute(url_query)]
    return FrontierResponse(
        hosts=[FrontierHost(**row) for row in host_rows], queued=[QueuedUrl(**row) for row in url_rows]
    )


class StorageResponse(BaseModel):
    database_bytes: int | None = Field(
        description="Size of the factory's database (SQLite file and its WAL, or the PostgreSQL database)."
    )


@router.get("/api/storage", response_model=StorageResponse)
def get_storage(ctx: Ctx) -> StorageResponse:
    """How much disk the corpus and everything else in the database take (a file stat or one catalog
    call: the same cost at any size)."""
    db = ctx.db
    if db.backend == "postgresql":
        with db.read() as conn:
            size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
        return StorageResponse(database_bytes=int(size or 0))
    path = db.sqlite_path
    if path is None:  # an in-memory database
        return StorageResponse(database_bytes=None)
    files = [path, path.with_name(path.name + "-wal")]
    return StorageResponse(database_bytes=sum(f.stat().st_size for f in files if f.exists()))
