"""What the dataset reads from the `documents` table: sizes, a tokenizer sample, new documents, texts.

Every scan walks the primary key in pages (keyset pagination, never OFFSET) and holds one page at a
time, so memory stays flat however large the table grows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from aifactory.db import counters
from aifactory.db.database import Database
from aifactory.db.schema import document_removals, documents

PAGE = 2000


@dataclass(frozen=True)
class DocumentMeta:
    """A document's row without its text: enough to split, weigh and schedule it."""

    id: int
    url: str
    domain: str
    source_type: str
    language: str
    quality: float
    chars: int


def _language_filter(languages: list[str]) -> sa.ColumnElement[bool]:
    return documents.c.language.in_(languages) if languages else sa.true()


def allowed_chars(db: Database, languages: list[str]) -> dict[str, int]:
    """Characters of allowed documents per language (only `languages`, unless empty)."""
    query = (
        sa.select(documents.c.language, sa.func.coalesce(sa.func.sum(documents.c.char_count), 0))
        .where(documents.c.allowed_for_training.is_(True), _language_filter(languages))
        .group_by(documents.c.language)
    )
    with db.read() as conn:
        return {language: int(chars) for language, chars in conn.execute(query)}


def tokenizer_sample(
    db: Database, languages: list[str], budget_chars: int, *, max_doc_chars: int = 20_000, seed: int = 0
) -> Iterator[str]:
    """A random sample of the allowed corpus of about `budget_chars` characters, every language in
    proportion to its share (each document is kept with the same probability), in one pass over the
    table. A very long document contributes its first `max_doc_chars` only, so none dominates."""
    capped = sa.case((documents.c.char_count > max_doc_chars, max_doc_chars), else_=documents.c.char_count)
    allowed = sa.and_(documents.c.allowed_for_training.is_(True), _language_filter(languages))
    with db.read() as conn:
        total = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(capped), 0)).where(allowed)).scalar())
    if total == 0:
        return
    keep = min(1.0, budget_chars / total)
    rng = np.random.default_rng(seed)
    after = -1
    while True:
        with db.read() as conn:
            ids = list(
                conn.execute(
                    sa.select(documents.c.id)
                    .where(allowed, documents.c.id > after)
                    .order_by(documents.c.id)
                    .limit(PAGE)
                ).scalars()
            )
        if not ids:
            return
        after = ids[-1]
        chosen = [doc_id for doc_id, draw in zip(ids, rng.random(len(ids)), strict=True) if draw < keep]
        for text in texts(db, chosen).values():
            yield text[:max_doc_chars]


def count_after(db: Database, floor: int) -> tuple[int, int]:
    """(documents, characters) with an id above `floor`: what a build will look at."""
    query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(documents.c.char_count), 0)).where(
        documents.c.id > floor
    )
    with db.read() as conn:
        count, chars = conn.execute(query).one()
    return int(count), int(chars)


def ids_between(db: Database, low: int, high: int) -> list[int]:
    """Ids in (low, high]: a build looks at these again when some of them lie in a gap."""
    query = (
        sa.select(documents.c.id).where(documents.c.id > low, documents.c.id <= high).order_by(documents.c.id)
    )
    with db.read() as conn:
        return [int(doc_id) for doc_id in conn.execute(query).scalars()]


def oldest_age_after(db: Database, floor: int) -> float:
    """Seconds since the oldest document with an id above `floor` was stored (by the database clock)."""
    query = sa.select(db.now() - sa.func.min(documents.c.created_at)).where(documents.c.id > floor)
    with db.read() as conn:
        age = conn.execute(query).scalar()
    return float(age or 0.0)


def metadata_after(db: Database, floor: int) -> Iterator[DocumentMeta]:
    """Every document with an id above `floor`, in id order, page by page."""
    columns = (
        documents.c.id,
        documents.c.url,
        documents.c.domain,
        documents.c.source_type,
        documents.c.language,
        documents.c.quality_score,
        documents.c.char_count,
    )
    after = floor
    while True:
        with db.read() as conn:
            rows = conn.execute(
                sa.select(*columns).where(documents.c.id > after).order_by(documents.c.id).limit(PAGE)
            ).all()
        if not rows:
            return
        for row in rows:
            yield DocumentMeta(int(row[0]), row[1], row[2], row[3], row[4], float(row[5]), int(row[6]))
        after = int(rows[-1][0])


def texts(db: Database, ids: list[int]) -> dict[int, str]:
    """The texts of these documents, in the order given (missing ones left out)."""
    found: dict[int, str] = {}
    for start in range(0, len(ids), 1000):
        part = ids[start : start + 1000]
        with db.read() as conn:
            rows = conn.execute(sa.select(documents.c.id, documents.c.text).where(documents.c.id.in_(part)))
            found.update((int(doc_id), text) for doc_id, text in rows)
    return {doc_id: found[doc_id] for doc_id in ids if doc_id in found}


def blocked_ids(db: Database) -> np.ndarray:
    """Sorted ids of the documents that may not be trained on: blocked by a policy or the page's own
    opt-out, or removed because a newer version of their page replaced them.

    The first condition matches the partial index ix_documents_blocked, so this costs what is blocked."""
    blocked = sa.select(documents.c.id).where(documents.c.allowed_for_training == sa.false())
    removed = sa.select(document_removals.c.doc_id)
    with db.read() as conn:
        ids = np.fromiter(conn.execute(blocked.union_all(removed)).scalars(), dtype=np.int64)
    return np.unique(ids)


def pipeline_totals(db: Database) -> dict[str, int]:
    """The text pipeline's running totals: documents blocked, filtered and dropped as duplicates."""
    totals = counters.get_all(db, "docs.")
    return {
        kind: sum(value for name, value in totals.items() if name.startswith(f"docs.{prefix}."))
        for kind, prefix in (("blocked", "blocked"), ("filtered", "filtered"), ("duplicates", "duplicate"))
    }
