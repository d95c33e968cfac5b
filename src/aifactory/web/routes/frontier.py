"""The crawl frontier for the dashboard: hosts with work queued and the next URLs due.

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
