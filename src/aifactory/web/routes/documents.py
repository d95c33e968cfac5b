"""Documents: GET /api/documents/rejections says which pages were dropped and why; explain, one page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from aifactory.db import rejections as rejection_log
from aifactory.web.context import Ctx

router = APIRouter(tags=["documents"])


class Rejection(BaseModel):
    id: int
    url: str = Field(description="The page (or `URL#part-N`, a part of a long one).")
    domain: str
    source: str = Field(description="web, docs, rss, wikipedia, local...")
    reason: str = Field(
        description="The rule that dropped it (e.g. repeated_ngrams, link_list, duplicate_near)."
    )
    detail: str = Field(description="Which part of the prose and variant of the rule, e.g. `cjk dup_5gram`.")
    value: float = Field(description="What the rule measured.")
    threshold: float = Field(description="The limit the value broke.")
    language: str
    chars: int = Field(description="Characters of the extracted text.")
    node_id: str
    created_at: float


class RejectionCount(BaseModel):
    domain: str
    reason: str
    count: int = Field(description="Documents dropped for this reason on this domain, since the start.")
    last_at: float | None


class RejectionsResponse(BaseModel):
    rejections: list[Rejection] = Field(
        description="Newest first; the log keeps the last REJECTIONS_MAX_ROWS rejections."
    )
    counts: list[RejectionCount] = Field(
        description="Totals per domain x reason (never pruned), largest first."
    )
    total: int = Field(description="Sum of the counts that match the filters.")


@router.get("/api/documents/rejections", response_model=RejectionsResponse)
def list_rejections(
    ctx: Ctx,
    domain: Annotated[str | None, Query(max_length=255, description="Only this domain (host name).")] = None,
    reason: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z0-9_]+$", description="Only this reason.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Rejections to return.")] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, description="Page back: rejections older than this id.")
    ] = None,
) -> RejectionsResponse:
    """Pages the text pipeline dropped, with the rule, its measured value and its threshold; and how
    many were dropped per domain and reason. `aifactory explain URL` shows every rule for one page."""
    return RejectionsResponse(
        rejections=[
            Rejection(**row)
            for row in rejection_log.recent(
                ctx.db, domain=domain, reason=reason, limit=limit, before_id=before_id
            )
        ],
        counts=[RejectionCount(**row) for row in rejection_log.counts(ctx.db, domain=domain, reason=reason)],
        total=rejection_log.total(ctx.db, domain=domain, reason=reason),
    )


@router.get("/api/documents/explain")
def explain_page(
    ctx: Ctx,
    url: Annotated[
        str,
        Query(min_length=8, max_length=2000, pattern=r"^https?://", description="An http(s) page URL."),
    ],
) -> dict[str, Any]:
    """Why a page was kept or dropped: every quality rule's value, threshold and verdict, judged on the
    staged page or the stored text (`aifactory explain URL --no-fetch --json`). Never fetches and never
    reads a local file: only what the factory already holds."""
    from aifactory.text.explain import as_dict, explain  # text processing: loaded on the first call only

    return jsonable_encoder(as_dict(explain(ctx.settings, ctx.db, url, fetch=False)))
