"""Datasets: GET /api/datasets lists the dataset versions built and the tokenizer generations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from aifactory.dataset import records
from aifactory.web.context import Ctx

router = APIRouter(tags=["datasets"])


class SourceBreakdown(BaseModel):
    documents: int
    train_tokens: int
    val_tokens: int


class DatasetVersion(BaseModel):
    tag: str = Field(description="g<generation>-v<build>; checkpoints record it as dataset_version.")
    generation: int = Field(description="Tokenizer generation the tokens belong to.")
    tokenizer_hash: str
    documents: int = Field(description="Documents tokenized in all, up to this version.")
    new_documents: int = Field(description="Documents this build added.")
    train_tokens: int
    val_tokens: int
    skipped: int = Field(description="Documents the tokenizer failed on (in all).")
    blocked: int = Field(description="Documents stored as not allowed for training (pipeline total).")
    filtered: int = Field(description="Documents rejected by the quality filters (pipeline total).")
    duplicates: int = Field(description="Exact and near duplicates dropped (pipeline total).")
    per_source: dict[str, SourceBreakdown]
    build_seconds: float
    node_id: str
    created_at: float


class TokenizerGeneration(BaseModel):
    generation: int
    tokenizer_hash: str
    model_type: str
    vocab_size: int
    languages: str = Field(
        description="The languages of its training sample (1% of it or more), largest first."
    )
    language_chars: dict[str, int] = Field(description="Characters per language in the training sample.")
    note: str = Field(description="Why it was trained when it was, when not by the rule.")
    sample_documents: int
    sample_chars: int
    train_seconds: float
    created_at: float


class DatasetsResponse(BaseModel):
    versions: list[DatasetVersion] = Field(description="Newest first.")
    tokenizers: list[TokenizerGeneration] = Field(description="Newest generation first.")


@router.get("/api/datasets", response_model=DatasetsResponse)
def list_datasets(
    ctx: Ctx, limit: Annotated[int, Query(ge=1, le=1000, description="Versions to return.")] = 100
) -> DatasetsResponse:
    """The dataset versions (what each build added, split sizes, per-source tokens) and tokenizers."""
    return DatasetsResponse(
        versions=[
            DatasetVersion(**{**row, "per_source": row["per_source"] or {}})
            for row in records.list_versions(ctx.db, limit)
        ],
        tokenizers=[
            TokenizerGeneration(**{**row, "language_chars": row["language_chars"] or {}})
            for row in records.list_tokenizers(ctx.db)
        ],
    )
