"""The text pipeline: raw page → clean, deduplicated, licensed training document.

    extract → language → quality → PII → fingerprint      (`analyze`: CPU only, runs in a process pool)
    exact dedup → near dedup → policy → store              (`store`: one database transaction)

Each step is a function of `aifactory.text` testable alone; here they are composed and counted.
Every outcome increments a running counter (`docs.stored.<source>`, `docs.filtered.<reason>`,
`docs.duplicate.exact|near`, `docs.blocked.<reason>`, `docs.replaced`) in the same transaction as the
documents, so the dashboard's figures and the table never disagree.

A page fetched again whose text changed *replaces* its stored document: the old row is deleted (its LSH
bands with it, and a tombstone in `document_removals` tells the dataset to stop sampling its tokens) and
the new text is stored under a new id, which the dataset builder tokenizes like any new document. The
new version is deduplicated against everything but the version it replaces; if it is a copy of another
document, or fails the quality rules, the stored version stays.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from aifactory.db import counters
from aifactory.db import policies as policy_rules
from aifactory.db import rejections as rejection_log
from aifactory.db.database import Database
from aifactory.db.schema import document_removals, documents, minhash_bands
from aifactory.settings import Settings
from aifactory.text.extract import Extracted, ExtractionTimeout, extract_document
from aifactory.text.language import Language, detect_language
from aifactory.text.minhash import MinHasher, similarity
from aifactory.text.normalize import split_long
from aifactory.text.pii import mask_pii
from aifactory.text.prose import Prose, classify_text, parse_marked
from aifactory.text.quality import QualityRules, QualityVerdict, assess_quality
from aifactory.text.sections import section_offsets

NEAR_DUPLICATE_SIMILARITY = 0.75  # LSH candidates are confirmed on the signatures before rejecting
MAX_CANDIDATES = 20  # stored documents compared per new one (a popular band must not cost thousands)
LOOKUP_CHUNK = 400  # (band, key) pairs or ids per IN (...) lookup: under every driver's parameter limit
REJECTIONS_MAX_ROWS = 100_000  # the default of the setting of the same name


@dataclass
class RawDocument:
    """What a source hands to the pipeline: a fetched page, a feed entry, an API extract, a file."""

    url: str
    body: str
    content_type: str = "text/html"
    source: str = "web"
    final_url: str = ""
    title: str = ""
    published: str | None = None
    train_allowed: bool = True
    optout_reason: str = ""
    license_hint: str = ""  # a licence the source itself states (e.g. arXiv metadata CC0)
    links: list[str] = field(default_factory=list)  # out-links to other sites (automatic discovery)


@dataclass
class Analyzed:
    """One document (or one part of a long one) after the CPU steps."""

    raw: RawDocument
    url: str
    text: str = ""
    title: str = ""
    published: str | None = None
    language: str = "und"
    language_confidence: float = 0.0
    quality_score: float = 0.0
    reject_reason: str | None = None  # extraction/quality verdict; None = keep
    # the rule that decided a rejection: what it measured, its threshold, and where (e.g. "cjk dup_5gram")
    reject_value: float = 0.0
    reject_threshold: float = 0.0
    reject_detail: str = ""
    pii_masked: int = 0
    content_hash: bytes = b""
    signature: np.ndarray | None = None
    band_keys: list[int] = field(default_factory=list)
    sections: list[list] = field(default_factory=list)  # [[offset, level, heading], ...] into `text`


@dataclass(frozen=True)
class PipelineConfig:
    rules: QualityRules = field(default_factory=QualityRules)
    max_doc_chars: int = 100_000
    mask_pii: bool = True
    extract_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        return cls(
            rules=QualityRules(min_chars=settings.min_train_chars),
            max_doc_chars=settings.max_doc_chars,
            mask_pii=settings.enable_pii_filter,
        )


@dataclass(frozen=True)
class Judged:
    """One part of a document as the quality filter saw it (`analyze` and `aifactory explain`)."""

    url: str
    text: str
    prose: Prose
    language: Language
    verdict: QualityVerdict


def extract(raw: RawDocument, config: PipelineConfig) -> Extracted | str:
    """The document's text, or the reason there is none (extract_timeout, extract_error, no_text)."""
    try:
        extracted = extract_document(
            raw.body, raw.content_type, raw.final_url or raw.url, timeout=config.extract_timeout
        )
    except ExtractionTimeout:
        return "extract_timeout"
    except Exception:  # malformed input that the parser refuses is counted, never fatal
        return "extract_error"
    return "no_text" if extracted is None else extracted


def judge(url: str, extracted: Extracted, config: PipelineConfig) -> list[Judged]:
    """Language and quality of each part (a long document becomes several, each judged on its own)."""
    out = []
    for index, (text, prose) in enumerate(_parts(extracted, config.max_doc_chars)):
        # The language of the prose: a Japanese page that opens with an English command is Japanese.
        language = detect_language(_prose_sample(prose) or text)
        verdict = assess_quality(text, language.code, config.rules, prose)
        out.append(Judged(url if index == 0 else f"{url}#part-{index + 1}", text, prose, language, verdict))
    return out


def analyze(raw: RawDocument, config: PipelineConfig) -> list[Analyzed]:
    """The CPU-bound steps: extraction, then language, quality, PII masking and fingerprint per part."""
    extracted = extract(raw, config)
    if isinstance(extracted, str):
        return [Analyzed(raw, raw.url, reject_reason=extracted)]
    title = raw.title or extracted.title
    raw = dataclasses.replace(raw, body="")  # the text is extracted: don't ship the HTML back around
    hasher = MinHasher()
    out = []
    for part in judge(raw.url, extracted, config):
        text, verdict, language = part.text, part.verdict, part.language
        failed = verdict.failed
        masked = 0
        if config.mask_pii:
            text, masked = mask_pii(text)
        signature = hasher.signature(text, language.code)
        out.append(
            Analyzed(
                raw=raw,
                url=part.url,
                text=text,
                title=title,
                published=raw.published or extracted.date,
                language=language.code,
                language_confidence=language.confidence,
                quality_score=verdict.score,
                reject_reason=verdict.reason,
                reject_value=failed.value if failed else 0.0,
                reject_threshold=failed.threshold if failed else 0.0,
                reject_detail=failed.where if failed else "",
                pii_masked=masked,
                content_hash=content_hash(text),
                signature=signature,
                band_keys=hasher.band_keys(signature),
                sections=section_offsets(text, extracted.headings),
            )
        )
    return out


def _parts(extracted: Extracted, max_chars: int) -> list[tuple[str, Prose]]:
    """The document's parts with their line kinds (HTML: from the extractor's markers)."""
    if extracted.prose is not None and len(extracted.text) <= max_chars:
        return [(extracted.text, extracted.prose)]
    if extracted.marked:
        return [parse_marked(part) for part in split_long(extracted.marked, max_chars)]
    return [(part, classify_text(part)) for part in split_long(extracted.text, max_chars)]


def _prose_sample(prose: Prose, chars: int = 1000) -> str:
    out, size = [], 0
    for line in prose.prose_lines():
        out.append(line)
        size += len(line)
        if size >= chars:
            break
    return "\n".join(out)


def analyze_many(raws: list[RawDocument], config: PipelineConfig, pool: Executor | None) -> list[Analyzed]:
    if pool is None or len(raws) < 2:
        return [doc for raw in raws for doc in analyze(raw, config)]
    return [doc for docs in pool.map(analyze, raws, [config] * len(raws)) for doc in docs]


def content_hash(text: str) -> bytes:
    """Exact-duplicate key: whitespace and case do not make a document new."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).digest()[:16]


def domain_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def store(
    db: Database,
    docs: Iterable[Analyzed],
    policies: list[policy_rules.Policy],
    *,
    node_id: str = "",
    dedup: bool = True,
    conn: Connection | None = None,
    rejections_max_rows: int = REJECTIONS_MAX_ROWS,
) -> Counter[str]:
    """Deduplicate, apply policies and store, in one transaction; returns the outcome counts.

    The whole batch costs a fixed handful of statements (one lookup of its hashes, one of its LSH
    bands, one multi-row insert of documents and one of bands) rather than four per document:
    per-statement overhead, not SQLite or PostgreSQL, was most of the cost of storing. Every document
    dropped is recorded with its reason (`aifactory.db.rejections`) in the same transaction."""
    if conn is None:
        with db.begin() as own:
            return store(
                db,
                docs,
                policies,
                node_id=node_id,
                dedup=dedup,
                conn=own,
                rejections_max_rows=rejections_max_rows,
            )
    outcome: Counter[str] = Counter()
    kept: list[Analyzed] = []
    urls: set[str] = set()
    dropped: list[rejection_log.Rejection] = []
    for doc in docs:
        if doc.reject_reason is not None:
            outcome[f"docs.filtered.{doc.reject_reason}"] += 1
            dropped.append(_rejection(doc, doc.reject_reason, doc.reject_value, doc.reject_threshold))
        elif doc.url[:2000] in urls:  # the same URL twice in one batch: the first one counts
            outcome["docs.duplicate.exact"] += 1
        else:
            urls.add(doc.url[:2000])
            kept.append(doc)
    previous = _stored_versions(conn, kept)
    fresh = [doc for doc in kept if previous.get(doc.url[:2000], (0, b"", 0))[1] != doc.content_hash]
    if len(fresh) < len(kept):  # fetched again, same text: nothing to do
        outcome["docs.duplicate.exact"] += len(kept) - len(fresh)
    kept = fresh
    if dedup:
        kept = _drop_duplicates(conn, kept, outcome, previous, dropped)
    replaced = _retire_replaced(db, conn, kept, previous)
    inserted = _insert(db, conn, kept, policies, node_id)
    _delete_retired(conn, replaced)
    for doc in kept:
        if doc.url[:2000] not in inserted:  # its URL (or text) was stored by another node a moment ago
            outcome["docs.duplicate.exact"] += 1
            continue
        block = inserted[doc.url[:2000]]
        if doc.url[:2000] in replaced:
            outcome["docs.replaced"] += 1
            outcome["docs.chars"] += len(doc.text) - replaced[doc.url[:2000]][1]
        else:
            outcome[f"docs.stored.{doc.raw.source}"] += 1
            outcome[f"docs.language.{doc.language}"] += 1  # the dashboard's corpus by language
            outcome["docs.stored"] += 1
            outcome["docs.chars"] += len(doc.text)
        if block:
            outcome[f"docs.blocked.{block.split(':', 1)[0]}"] += 1
        if doc.pii_masked:
            outcome["docs.pii_masked"] += doc.pii_masked
    counters.add(db, dict(outcome), conn)
    rejection_log.record(db, conn, dropped, node_id=node_id, max_rows=rejections_max_rows)
    return outcome


def _rejection(
    doc: Analyzed, reason: str, value: float, threshold: float, detail: str = ""
) -> rejection_log.Rejection:
    return rejection_log.Rejection(
        url=doc.url,
        domain=domain_of(doc.raw.final_url or doc.url),
        reason=reason,
        value=value,
        threshold=threshold,
        detail=detail or doc.reject_detail,
        source=doc.raw.source,
        language=doc.language,
        chars=len(doc.text),
    )


def _block_reason(doc: Analyzed, policy: policy_rules.Policy) -> str:
    """Why the document may not be trained on ("" = it may): its own opt-out, else its policy."""
    if doc.raw.optout_reason or not doc.raw.train_allowed:
        return doc.raw.optout_reason or "optout"
    return "" if policy.allow_training else f"policy:{policy.domain_pattern}"


def _stored_versions(conn: Connection, docs: list[Analyzed]) -> dict[str, tuple[int, bytes, int]]:
    """url -> (id, content hash, characters) of the stored documents these URLs already have."""
    urls = sorted({doc.url[:2000] for doc in docs})
    found: dict[str, tuple[int, bytes, int]] = {}
    for start in range(0, len(urls), LOOKUP_CHUNK):
        rows = conn.execute(
            sa.select(
                documents.c.url, documents.c.id, documents.c.content_hash, documents.c.char_count
            ).where(documents.c.url.in_(urls[start : start + LOOKUP_CHUNK]))
        )
        found.update((url, (int(doc_id), bytes(digest), int(chars))) for url, doc_id, digest, chars in rows)
    return found


def _retire_replaced(
    db: Database, conn: Connection, docs: list[Analyzed], previous: dict[str, tuple[int, bytes, int]]
) -> dict[str, tuple[int, int]]:
    """Move the stored versions of pages whose new text is about to be stored out of their URL's way,
    leaving a tombstone for each; returns url -> (id, characters) of the versions retired.

    They are deleted only after the new versions are inserted (`_delete_retired`): SQLite hands out
    max(id) + 1, so deleting the newest document first would give its id to the next one, and the
    dataset (which has tokenized every id up to its watermark, and now blocks the tombstoned one)
    would never see the new text."""
    old = {doc.url[:2000]: previous[doc.url[:2000]] for doc in docs if doc.url[:2000] in previous}
    if not old:
        return {}
    now = db.now_value(conn)
    conn.execute(
        document_removals.insert(),
        [
            {"doc_id": doc_id, "url": url, "reason": "replaced", "removed_at": now}
            for url, (doc_id, _, _) in old.items()
        ],
    )
    for doc_id, _, _ in old.values():
        conn.execute(documents.update().where(documents.c.id == doc_id).values(url=f"replaced:{doc_id}"))
    return {url: (doc_id, chars) for url, (doc_id, _, chars) in old.items()}


def _delete_retired(conn: Connection, retired: dict[str, tuple[int, int]]) -> None:
    ids = [doc_id for doc_id, _ in retired.values()]
    if ids:
        conn.execute(minhash_bands.delete().where(minhash_bands.c.doc_id.in_(ids)))
        conn.execute(documents.delete().where(documents.c.id.in_(ids)))


def _drop_duplicates(
    conn: Connection,
    docs: list[Analyzed],
    outcome: Counter[str],
    previous: dict[str, tuple[int, bytes, int]],
    dropped: list[rejection_log.Rejection],
) -> list[Analyzed]:
    """The documents that are neither an exact nor a near copy of a stored one, nor of an earlier
    one in the same batch; the others are counted, and added to `dropped`. The stored version a
    document replaces (same URL, in `previous`) is not a copy of it: a page edited a little is a new
    version, not a duplicate."""
    if not docs:
        return []
    hashes = sorted({doc.content_hash for doc in docs})
    seen_hashes = set(
        conn.execute(
            sa.select(documents.c.content_hash).where(documents.c.content_hash.in_(hashes))
        ).scalars()
    )
    # LSH candidates among stored documents (at most MAX_CANDIDATES each), confirmed on the signatures
    stored_by_band = _stored_band_owners(conn, docs)
    own = {doc.url[:2000]: previous[doc.url[:2000]][0] for doc in docs if doc.url[:2000] in previous}
    candidates = [
        list(
            dict.fromkeys(
                i
                for band in enumerate(doc.band_keys)
                for i in stored_by_band.get(band, ())
                if i != own.get(doc.url[:2000])
            )
        )
        for doc in docs
    ]
    candidates = [ids[:MAX_CANDIDATES] for ids in candidates]
    signatures = _stored_signatures(conn, {i for ids in candidates for i in ids})
    kept: list[Analyzed] = []
    kept_by_band: dict[tuple[int, int], list[np.ndarray]] = {}
    for doc, stored in zip(docs, candidates, strict=True):
        if doc.content_hash in seen_hashes:
            outcome["docs.duplicate.exact"] += 1
            dropped.append(_rejection(doc, "duplicate_exact", 1.0, 1.0, "same text"))
            continue
        seen_hashes.add(doc.content_hash)
        bands = list(enumerate(doc.band_keys)) if doc.signature is not None else []
        others = [signatures[i] for i in stored if i in signatures]
        others += [sig for band in bands for sig in kept_by_band.get(band, ())]  # earlier in this batch
        closest = max((similarity(other, doc.signature) for other in others), default=0.0)
        if closest >= NEAR_DUPLICATE_SIMILARITY:
            outcome["docs.duplicate.near"] += 1
            dropped.append(
                _rejection(doc, "duplicate_near", closest, NEAR_DUPLICATE_SIMILARITY, "similarity")
            )
            continue
        kept.append(doc)
        for band in bands:
            kept_by_band.setdefault(band, []).append(doc.signature)
    return kept


def _stored_band_owners(conn: Connection, docs: list[Analyzed]) -> dict[tuple[int, int], list[int]]:
    """(band, key) → ids of stored documents with that band, for every band of the batch."""
    pairs = sorted({(band, key) for doc in docs for band, key in enumerate(doc.band_keys)})
    owners: dict[tuple[int, int], list[int]] = {}
    for start in range(0, len(pairs), LOOKUP_CHUNK):
        chunk = pairs[start : start + LOOKUP_CHUNK]
        rows = conn.execute(
            sa.select(minhash_bands.c.band, minhash_bands.c.band_key, minhash_bands.c.doc_id).where(
                sa.tuple_(minhash_bands.c.band, minhash_bands.c.band_key).in_(chunk)
            )
        )
        for band, key, doc_id in rows:
            owners.setdefault((band, key), []).append(doc_id)
    return owners


def _stored_signatures(conn: Connection, ids: set[int]) -> dict[int, np.ndarray]:
    ordered = sorted(ids)
    signatures: dict[int, np.ndarray] = {}
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        rows = conn.execute(
            sa.select(documents.c.id, documents.c.minhash).where(
                documents.c.id.in_(ordered[start : start + LOOKUP_CHUNK])
            )
        )
        signatures.update((doc_id, np.frombuffer(blob, dtype=np.uint32)) for doc_id, blob in rows if blob)
    return signatures


def _insert(
    db: Database,
    conn: Connection,
    docs: list[Analyzed],
    policies: list[policy_rules.Policy],
    node_id: str,
) -> dict[str, str]:
    """Insert the documents and their LSH bands; returns each inserted URL with its block reason
    ("" = trainable). A document whose URL or text is already there is skipped by the database, so
    two nodes storing at once cannot both win."""
    if not docs:
        return {}
    dialect_insert = postgresql.insert if db.backend == "postgresql" else sqlite.insert
    now = db.now_value(conn)  # one database-clock reading for the batch
    rows, blocks = [], {}
    for doc in docs:
        domain = domain_of(doc.raw.final_url or doc.url)
        policy = policy_rules.resolve(policies, domain, doc.raw.source)
        block = blocks[doc.url[:2000]] = _block_reason(doc, policy)
        rows.append(
            {
                "url": doc.url[:2000],
                "final_url": (doc.raw.final_url or doc.url)[:2000],
                "domain": domain[:255],
                "title": doc.title[:500],
                "text": doc.text,
                "char_count": len(doc.text),
                "language": doc.language,
                "language_confidence": doc.language_confidence,
                "source_type": doc.raw.source,
                "quality_score": doc.quality_score,
                "content_hash": doc.content_hash,
                "license_tag": doc.raw.license_hint or policy.license_tag,
                "allowed_for_training": not block,
                "block_reason": block[:200],
                "optout_reason": doc.raw.optout_reason[:200],
                "published": (doc.published or "")[:64],
                "node_id": node_id,
                "created_at": now,
                "minhash": doc.signature.tobytes() if doc.signature is not None else None,
                "sections": doc.sections or None,
            }
        )
    statement = dialect_insert(documents).on_conflict_do_nothing().returning(documents.c.id, documents.c.url)
    url_ids = {url: doc_id for doc_id, url in conn.execute(statement, rows)}
    bands = [
        {"band": band, "band_key": key, "doc_id": url_ids[doc.url[:2000]]}
        for doc in docs
        if doc.url[:2000] in url_ids
        for band, key in enumerate(doc.band_keys)
    ]
    if bands:
        conn.execute(minhash_bands.insert(), bands)
    return {url: blocks[url] for url in url_ids}
