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
from aifactory.db.schema import document_removals, documents, frontier, staged_pages

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


# The tokenizer's sample gives every language of the corpus an equal share of its characters, so a
# language that is 10% of the corpus still gets about half of a bilingual vocabulary (in proportion it
# would get a tenth, and Japanese would cost ~1.5x the tokens per character). A language with less text
# than its share is repeated, at most this many times: beyond that its few pages would be memorised
# as pieces rather than its words learned; what it cannot fill goes to the other languages.
SAMPLE_MAX_REPEATS = 4
# Languages under this share of the corpus (misdetected pages, quotations) are sampled in proportion.
SAMPLE_BALANCE_MIN_SHARE = 0.01


def sample_plan(chars: dict[str, int], budget: int) -> dict[str, float]:
    """How often each language's text goes into the sample (1.0 = all of it once, 0.5 = half of it,
    2.5 = all of it twice and half of it a third time), for at most `budget` characters in all."""
    total = sum(chars.values())
    if total == 0:
        return {}
    minor = {code for code, n in chars.items() if n < SAMPLE_BALANCE_MIN_SHARE * total}
    base = min(1.0, budget / total)
    plan = {code: base for code in minor}
    left = budget - base * sum(chars[code] for code in minor)
    balanced = {code: n for code, n in chars.items() if code not in minor}
    # Each language may fill up to what the largest one has (no point in repeating every language
    # when the budget allows), and a small one up to SAMPLE_MAX_REPEATS times its text.
    largest = max(balanced.values())
    room = {code: min(largest, n * SAMPLE_MAX_REPEATS) for code, n in balanced.items()}
    # Water-filling: an equal share each; a language that cannot fill its share keeps what it can,
    # and the rest is shared again among the others.
    while room:
        share = left / len(room)
        full = {code: r for code, r in room.items() if r <= share}
        if not full:
            plan.update({code: share / balanced[code] for code in room})
            break
        for code, r in full.items():
            plan[code] = r / balanced[code]
            left -= r
            del room[code]
    return plan


def tokenizer_sample(
    db: Database,
    languages: list[str],
    budget_chars: int,
    *,
    max_doc_chars: int = 20_000,
    seed: int = 0,
    plan: dict[str, float] | None = None,
) -> Iterator[tuple[str, str]]:
    """A random sample of the allowed corpus of about `budget_chars` characters, as (language, text),
    balanced across languages by `sample_plan`, in one pass over the table. A very long document
    contributes its first `max_doc_chars` only, so none dominates."""
    if plan is None:
        plan = sample_plan(sample_chars(db, languages, max_doc_chars=max_doc_chars), budget_chars)
    if not plan:
        return
    allowed = sa.and_(documents.c.allowed_for_training.is_(True), _language_filter(languages))
    rng = np.random.default_rng(seed)
    after = -1
    while True:
        with db.read() as conn:
            rows = conn.execute(
                sa.select(documents.c.id, documents.c.language)
                .where(allowed, documents.c.id > after)
                .order_by(documents.c.id)
                .limit(PAGE)
            ).all()
        if not rows:
            return
        after = rows[-1][0]
        rate = np.array([plan.get(language, 0.0) for _, language in rows])
        copies = np.floor(rate) + (rng.random(len(rows)) < rate - np.floor(rate))
        chosen = {
            int(doc_id): (language, int(n)) for (doc_id, language), n in zip(rows, copies, strict=True) if n
        }
        for doc_id, text in texts(db, list(chosen)).items():
            language, n = chosen[doc_id]
            for _ in range(n):
                yield language, text[:max_doc_chars]


def sample_chars(db: Database, languages: list[str], *, max_doc_chars: int = 20_000) -> dict[str, int]:
    """Characters per language the tokenizer sample draws from (documents capped at max_doc_chars)."""
    capped = sa.case((documents.c.char_count > max_doc_chars, max_doc_chars), else_=documents.c.char_count)
    query = (
        sa.select(documents.c.language, sa.func.coalesce(sa.func.sum(capped), 0))
        .where(documents.c.allowed_for_training.is_(True), _language_filter(languages))
        .group_by(documents.c.language)
    )
    with db.read() as conn:
        return {language: int(chars) for language, chars in conn.execute(query) if chars}


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


@dataclass(frozen=True)
class CrawlBacklog:
    """What is still to come: URLs queued in the frontier, pages waiting for the text pipeline (both
    counted up to a cap, so this stays cheap with millions of them), and how long ago the newest
    document arrived (None: no document yet)."""

    queued_urls: int
    staged_pages: int
    newest_document_age: float | None

    @property
    def exhausted(self) -> bool:
        return self.queued_urls == 0 and self.staged_pages == 0


def crawl_backlog(db: Database, cap: int = 100_000) -> CrawlBacklog:
    def bounded(query: sa.Select) -> sa.Select:
        return sa.select(sa.func.count()).select_from(query.limit(cap).subquery())

    newest = sa.select(db.now() - documents.c.created_at).order_by(documents.c.id.desc()).limit(1)
    with db.read() as conn:
        queued = conn.execute(
            bounded(sa.select(frontier.c.url_hash).where(frontier.c.state == "queued"))
        ).scalar()
        staged = conn.execute(bounded(sa.select(staged_pages.c.id))).scalar()
        age = conn.execute(newest).scalar()
    return CrawlBacklog(int(queued or 0), int(staged or 0), None if age is None else float(age))
