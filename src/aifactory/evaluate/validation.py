"""The frozen validation data an evaluation reads: the trainer's validation windows (for bits per byte)
and the validation documents (for the multiple-choice task), of the model's own tokenizer generation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aifactory.dataset.source import ShardSource
from aifactory.db.database import Database
from aifactory.evaluate import EvalError
from aifactory.settings import Settings
from aifactory.train.batches import SourceUnavailable

BPB_BATCH = 8  # windows per forward pass


@dataclass
class ValidationSet:
    version: str  # ShardSource.val_version: changes only when a language's validation set doubled
    tokenizer_hash: str
    token_bytes: torch.Tensor  # [vocab] UTF-8 bytes each token stands for, 0 = special
    documents: dict[str, list[np.ndarray]]  # language -> tokens of each validation document
    windows: torch.Tensor  # [n, seq_len + 1] the trainer's validation windows
    window_languages: list[str]  # language of each window


def from_source(source: ShardSource, seq_len: int, count: int) -> ValidationSet:
    """The validation set of a shard source, its windows `count` batches of BPB_BATCH x `seq_len`."""
    try:
        batches = source.val_batches(BPB_BATCH, seq_len, count)
    except SourceUnavailable as exc:
        raise EvalError(f"no validation data to evaluate on: {exc}") from None
    return ValidationSet(
        version=source.val_version,
        tokenizer_hash=source.tokenizer_hash,
        token_bytes=source.token_bytes,
        documents=source.validation_documents(),
        windows=torch.cat(batches),
        window_languages=source.val_row_languages(BPB_BATCH, seq_len, count),
    )


def generation_of(settings: Settings, tokenizer_hash: str) -> int:
    """The tokenizer generation under DATA_DIR whose hash a model records."""
    from aifactory.serve.catalog import tokenizer_dir

    where = tokenizer_dir(settings, tokenizer_hash)
    if where is None:
        raise EvalError(
            f"the model's tokenizer ({tokenizer_hash[:16] or 'none recorded'}) is not under "
            f"{settings.data_dir}/tokenizer: a model trained with `--text-file` (bytes) has no validation "
            "documents to be evaluated on"
        )
    return int(where.name.lstrip("g"))


def load(settings: Settings, db: Database, tokenizer_hash: str, seq_len: int) -> ValidationSet:
    """The validation set of the model's tokenizer generation, as the trainer would evaluate it."""
    generation = generation_of(settings, tokenizer_hash)
    try:
        source = ShardSource(settings, db, generation)
    except SourceUnavailable as exc:
        raise EvalError(f"no validation data: {exc}") from None
    try:
        return from_source(source, seq_len, settings.val_eval_batches)
    finally:
        source.close()


def current_version(settings: Settings, db: Database, tokenizer_hash: str) -> str:
    """The validation version the model's tokenizer generation has now (without reading windows)."""
    try:
        source = ShardSource(settings, db, generation_of(settings, tokenizer_hash))
    except SourceUnavailable as exc:
        raise EvalError(f"no validation data: {exc}") from None
    try:
        return source.val_version
    finally:
        source.close()
