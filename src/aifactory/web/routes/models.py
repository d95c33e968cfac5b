"""The model registry: versions, promotion through the gate, rollback (docs/evaluation.md).

    GET  /api/models              the versions, newest first, with scores; which is production
    POST /api/models/promote      promote the best checkpoint (or the one named) through the gate (admin)
    POST /api/models/rollback     production back to its rollback target (admin)

A refused promotion is 409 with the scores and the rule that decided; so is the loser of two promotions at
once. The gate may evaluate, so it runs in a child process (registry/child.py), never in this one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from aifactory.registry import PromotionRefused, RegistryError, child, gate, versions
from aifactory.web.auth import AdminOnly
from aifactory.web.context import Ctx

router = APIRouter(tags=["models"])
admin_router = APIRouter(tags=["models"], dependencies=[AdminOnly])


class ModelVersion(BaseModel):
    version: int
    name: str = Field(description="vN: the name serving and export accept")
    origin: str = Field(description="checkpoint, import or update")
    checkpoint: str
    step: int
    score: float | None
    task_version: str | None
    parameters: int
    size_bytes: int
    created_at: float
    deleted: bool = Field(description="its directory was removed by retention")
    production: bool
    card: dict[str, Any] = Field(description="model_card.json")


class ModelList(BaseModel):
    production: int | None
    previous: int | None = Field(description="the rollback target")
    versions: list[ModelVersion]


class PromoteRequest(BaseModel):
    checkpoint: str | None = Field(None, max_length=1000, description="default best; latest or a directory")


class Promotion(BaseModel):
    promoted: bool
    version: int | None
    previous: int | None
    forced: bool
    candidate_score: float | None
    production_score: float | None
    min_score: float
    tolerance: float
    task_version: str | None
    rule: str = Field(description="the rules that decided")


class Rollback(BaseModel):
    version: int
    previous: int | None
    rolled_back_from: int | None


@router.get("/api/models", response_model=ModelList)
def list_models(ctx: Ctx) -> Any:
    return versions.listing(ctx.db)


@admin_router.post("/api/models/promote", response_model=Promotion)
async def promote(ctx: Ctx, body: PromoteRequest | None = None, force: bool = False) -> Any:
    checkpoint = (body or PromoteRequest()).checkpoint
    try:
        return await run_in_threadpool(child.promote, ctx.settings, checkpoint, True if force else None)
    except PromotionRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, exc.details) from None
    except RegistryError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None


@admin_router.post("/api/models/rollback", response_model=Rollback)
def rollback(ctx: Ctx) -> Any:
    try:
        return gate.rollback(ctx.settings, ctx.db)
    except PromotionRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, exc.details) from None
