"""Source policies: which domains may be trained on, under which licence, with which weight."""

from __future__ import annotations

import threading

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from aifactory.db import events
from aifactory.db import policies as policy_db
from aifactory.db.policies import ANY_SOURCE, Policy, normalize_pattern
from aifactory.web.auth import AdminOnly
from aifactory.web.context import Ctx

router = APIRouter(tags=["policies"])
admin_router = APIRouter(tags=["policies"], dependencies=[AdminOnly])


class PolicyItem(BaseModel):
    domain_pattern: str = Field(
        min_length=1, max_length=255, description="Domain; matches it and its subdomains (label boundaries)."
    )
    source_type: str = Field(
        ANY_SOURCE,
        min_length=1,
        max_length=32,
        description="Limit to one source type (web, rss, news, wikipedia...) or any.",
    )
    license_tag: str = Field("unknown", max_length=64)
    allow_training: bool = True
    base_weight: float = Field(1.0, ge=0, le=100, description="Multiplies the sampling weight.")
    notes: str = Field("", max_length=2000)

    @field_validator("domain_pattern")
    @classmethod
    def _domain(cls, value: str) -> str:
        pattern = normalize_pattern(value)
        if not pattern or "." not in pattern or " " in pattern:
            raise ValueError("must be a domain such as example.com")
        return pattern


class PolicyRow(PolicyItem):
    id: int
    created_at: float | None
    updated_at: float | None


class PoliciesResponse(BaseModel):
    policies: list[PolicyRow]


class PolicySaved(BaseModel):
    status: str = "ok"
    policy: PolicyItem
    message: str


@router.get("/api/policies", response_model=PoliciesResponse)
def list_policies(ctx: Ctx) -> PoliciesResponse:
    """Every policy, most recently changed first."""
    return PoliciesResponse(policies=[PolicyRow(**row) for row in policy_db.list_rows(ctx.db)])


@admin_router.post("/api/policies", response_model=PolicySaved)
def save_policy(body: PolicyItem, ctx: Ctx) -> PolicySaved:
    """Add or change a policy; documents already stored are re-tagged in the background."""
    saved = policy_db.upsert(ctx.db, Policy(**body.model_dump()))

    def retag() -> None:
        changed = policy_db.retag(ctx.db, saved.domain_pattern)
        events.record(
            ctx.db,
            f"policy {saved.domain_pattern}: {changed} stored documents re-tagged",
            source="policies",
            node_id=ctx.node.node_id,
        )

    threading.Thread(target=retag, name=f"retag-{saved.domain_pattern}", daemon=True).start()
    return PolicySaved(
        policy=PolicyItem(**body.model_dump()),
        message=f"policy for {saved.domain_pattern} saved; re-tagging stored documents",
    )
