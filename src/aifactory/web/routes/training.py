"""Training charts: GET /api/metrics/training?range=... serves the series from training_metrics.

The table is kept small by thinning (aifactory.train.metrics), and the series is aggregated in SQL into
at most 1200 buckets, so a chart costs the same on day one and after a year of training.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from aifactory.train import metrics
from aifactory.web.context import Ctx

router = APIRouter(tags=["training"])

RangeName = Literal["10s", "hour", "day", "week", "month", "year", "all"]


class TrainingPoint(BaseModel):
    ts: float = Field(description="Epoch seconds of the bucket's last row.")
    step: int = Field(description="Optimizer steps taken (the bucket's last).")
    epoch: float = Field(description="Passes over the training tokens of the dataset at the time.")
    tokens_seen: int
    train_loss: float | None = Field(description="Mean training loss (nats/token) in the bucket.")
    val_loss: float | None = Field(description="Mean validation loss of the bucket's evaluations.")
    val_bpb: float | None = Field(description="Validation bits per byte (comparable across tokenizers).")
    best_val_loss: float | None
    lr: float | None
    tokens_per_sec: float | None
    mfu: float | None = Field(description="Model FLOP utilisation against the measured matmul peak (0..1).")


class ValidationPoint(BaseModel):
    ts: float
    step: int
    val_loss: float | None = Field(description="Validation loss (nats/token) on this language's windows.")
    val_bpb: float | None = Field(description="Its bits per byte.")


class TrainingMetricsResponse(BaseModel):
    range: RangeName
    bucket_sec: int = Field(description="Width of one point's time bucket.")
    series: list[TrainingPoint] = Field(description="Oldest first, at most 1200 points.")
    validation_by_language: dict[str, list[ValidationPoint]] = Field(
        description="Per language, its validation loss and bits per byte over time (oldest first)."
    )


@router.get("/api/metrics/training", response_model=TrainingMetricsResponse)
def training_metrics(
    ctx: Ctx,
    range_name: Annotated[
        RangeName,
        Query(alias="range", description="10s: last 10 minutes by 10 s; hour, day, week, month, year; all."),
    ] = "day",
) -> TrainingMetricsResponse:
    """Loss, validation loss and bits per byte, learning rate, speed and MFU over time for the charts."""
    bucket, rows = metrics.series(ctx.db, range_name)
    languages = metrics.language_series(ctx.db, range_name)
    return TrainingMetricsResponse(
        range=range_name,
        bucket_sec=bucket,
        series=[TrainingPoint(**row) for row in rows],
        validation_by_language={
            name: [ValidationPoint(**point) for point in points] for name, points in languages.items()
        },
    )
