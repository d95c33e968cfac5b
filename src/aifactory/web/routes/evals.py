"""Evaluations: start one, follow it, read the history and the growth samples (docs/evaluation.md).

    POST /api/evals/run       start an evaluation in a process of its own (admin)
    GET  /api/evals/status    the newest evaluation job and its progress
    GET  /api/evals           the evaluation history, newest first, with parts and prompt results
    GET  /api/evals/growth    the growth samples: per fixed prompt, its answers across evaluations

The web process never evaluates: evaluate/jobs.py spawns the process, which reports into the database."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from aifactory.evaluate import EvalError, jobs, store
from aifactory.evaluate.target import resolve
from aifactory.web.auth import AdminOnly
from aifactory.web.context import Ctx

router = APIRouter(tags=["evaluation"])
admin_router = APIRouter(tags=["evaluation"], dependencies=[AdminOnly])


class EvalRequest(BaseModel):
    model: str = Field(
        "best", min_length=1, max_length=1000, description="best, latest, production, vN or a directory"
    )


class EvalStarted(BaseModel):
    job_id: int
    status: str


class EvalJob(BaseModel):
    id: int
    model: str
    status: str = Field(description="running, done or failed")
    progress: float = Field(description="0..1")
    message: str
    run_id: int | None
    error: str
    created_at: float
    finished_at: float | None


class EvalStatus(BaseModel):
    job: EvalJob | None


class EvalPart(BaseModel):
    part: str = Field(description="mc (accuracy) or bpb (bits per byte)")
    language: str = Field(description='"" = overall')
    value: float | None
    chance: float | None
    items: int


class PromptResult(BaseModel):
    prompt_id: str
    language: str
    prompt: str
    output: str
    score: float
    matched: list[str]


class EvalRun(BaseModel):
    id: int
    model: str
    checkpoint: str
    version: int | None
    step: int
    tokens_seen: int
    task_version: str
    score: float = Field(description="chance-adjusted multiple-choice accuracy, 0..1")
    mc_accuracy: float
    mc_chance: float
    bpb: float | None
    prompt_score: float | None
    seconds: float
    created_at: float
    parts: list[EvalPart]
    prompts: list[PromptResult]


class EvalHistory(BaseModel):
    runs: list[EvalRun]


class GrowthSample(BaseModel):
    run_id: int
    step: int
    output: str
    created_at: float


class GrowthPrompt(BaseModel):
    prompt_id: str
    language: str
    prompt: str
    samples: list[GrowthSample]


class Growth(BaseModel):
    prompts: list[GrowthPrompt]


@admin_router.post("/api/evals/run", status_code=status.HTTP_202_ACCEPTED, response_model=EvalStarted)
async def run_evaluation(ctx: Ctx, body: EvalRequest | None = None) -> Any:
    """Start evaluating a model (default the best checkpoint); 409 while another evaluation runs."""
    model = (body or EvalRequest()).model
    try:
        # a bad name or a missing checkpoint is a 400 now, not a failed job (file reads: off the loop)
        await run_in_threadpool(resolve, ctx.settings, model)
    except EvalError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    try:
        job_id = await run_in_threadpool(jobs.start, ctx.settings, ctx.db, model)
    except jobs.JobRunning as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return {"job_id": job_id, "status": "running"}


@router.get("/api/evals/status", response_model=EvalStatus)
def evaluation_status(ctx: Ctx) -> Any:
    return {"job": jobs.current(ctx.db)}


@router.get("/api/evals", response_model=EvalHistory)
def evaluation_history(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    return {"runs": store.list_runs(ctx.db, limit)}


@router.get("/api/evals/growth", response_model=Growth)
def growth_samples(ctx: Ctx) -> Any:
    return {"prompts": store.growth(ctx.db)}
