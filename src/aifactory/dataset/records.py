"""Tokenizer generations and dataset versions in the database: what each model was trained on.

The files under DATA_DIR are the data; these rows are its history, for the dashboard, `GET
/api/datasets` and provenance (a checkpoint records the tokenizer hash and the dataset version tag).
"""

from __future__ import annotations

import sqlalchemy as sa

from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.db.schema import dataset_versions, tokenizer_generations


def record_tokenizer(db: Database, tokenizer: Tokenizer, node_id: str = "") -> None:
    info = tokenizer.info
    values = {
        "generation": info.generation,
        "tokenizer_hash": info.tokenizer_hash,
        "model_type": info.model_type,
        "vocab_size": tokenizer.vocab_size,
        "languages": ",".join(info.languages),
        "sample_documents": info.sample_documents,
        "sample_chars": info.sample_chars,
        "train_seconds": info.train_seconds,
        "language_chars": info.language_chars,
        "note": info.note,
        "path": str(tokenizer.directory),
        "node_id": node_id,
        "created_at": info.created_at,
    }
    with db.begin() as conn:
        db.upsert(conn, tokenizer_generations, values, keys=["generation"])


def record_version(db: Database, values: dict) -> None:
    """Insert one dataset_versions row (a tag recorded twice, after a crash, is kept once)."""
    with db.begin() as conn:
        db.upsert(
            conn, dataset_versions, {**values, "created_at": db.now()}, keys=["tag"], update=lambda _: {}
        )


def list_versions(db: Database, limit: int = 100) -> list[dict]:
    query = sa.select(dataset_versions).order_by(dataset_versions.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def list_tokenizers(db: Database) -> list[dict]:
    query = sa.select(tokenizer_generations).order_by(tokenizer_generations.c.generation.desc())
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
