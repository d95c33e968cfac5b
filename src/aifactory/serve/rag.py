"""RAG: documents cut into passages, a full-text index that reads Japanese and English, and search.

Index. Each document becomes passages of about RAG_PASSAGE_CHARS characters, cut at paragraph, then
sentence boundaries, in `rag_passages` (a foreign key to `documents` with ON DELETE CASCADE: a deleted or
replaced document leaves the index with its row). New documents are found above a watermark (the highest
id below which everything is indexed) by the inference engine's indexer thread, a batch at a time, so
the index grows with the corpus and is never rebuilt. The watermark trails the newest ids by
SETTLE_SEC: on PostgreSQL an id becomes visible when its transaction commits, not in id order.

Search. No word segmentation is needed for Japanese: text is matched by character trigrams.
- SQLite: an FTS5 table with the trigram tokenizer over the passages (kept in sync by triggers), ranked
  by bm25.
- PostgreSQL: a `tsvector` of the passage's trigrams (computed here, so it does not depend on the
  database's locale or text-search configuration) with a GIN index, ranked by ts_rank.
A query is split into runs of CJK characters and words: a CJK run gives its trigrams, each a term (a
question's trigrams match the passages that share most of them); a word of three or more characters is
a term matched as a substring; a shorter run (the two-character Japanese 東京, or "AI"), which no trigram
can match, is looked up as a prefix of the indexed trigrams (FTS5's vocabulary table, tsquery `:*`).

What is retrieved: passages of documents allowed for training only. Blocked documents come from sites
that opted out of AI use (robots.txt AI groups, TDM reservation, noai) or from a source policy someone set
to keep a site out; quoting them in answers is a use of the same kind. The filter is applied at query
time, so a policy change takes effect at once without re-indexing.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aifactory.db import kv
from aifactory.db.database import Database
from aifactory.db.schema import documents, rag_passages
from aifactory.settings import Settings

log = logging.getLogger("aifactory.serve")

WATERMARK_KEY = "rag.watermark"
SETTLE_SEC = 120.0
BATCH_DOCS = 200
BUSY_BATCH_DOCS, BUSY_PAUSE_SEC = 20, 2.0  # while requests are answered
MAX_TERMS = 32
MAX_SHORT_TERMS = 4
PREFIX_EXPANSIONS = 12  # indexed trigrams a short term stands for (the most frequent)
PER_DOCUMENT = 2  # passages of one document among the results at most
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u3005\u3006\u30fc"
RUNS = re.compile(rf"[{CJK}]+|[^\W_{CJK}]+")
CJK_CHAR = re.compile(rf"[{CJK}]")
SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=[.;:])\s+")
STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has his how its may new now "
    "see two way who did get let put say she too use with that this from they will what when your "
    "have been were into than then them there their which would about could should these those "
    "does what where why is a an of to in on at by or as be it".split()
)


@dataclass(frozen=True)
class Hit:
    passage_id: int
    doc_id: int
    url: str
    title: str
    text: str
    score: float

    def as_passage(self) -> dict[str, str]:
        return {"url": self.url, "title": self.title, "text": self.text}


# --- passages --------------------------------------------------------------------------------------------
def split_passages(text: str, target: int) -> list[str]:
    """Passages of about `target` characters: whole paragraphs where they fit, else sentences, and a
    sentence longer than 1.5 x target is cut."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n|\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= target:
            pieces.append(paragraph)
            continue
        for sentence in SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            while len(sentence) > target * 3 // 2:
                pieces.append(sentence[:target])
                sentence = sentence[target:]
            if sentence:
                pieces.append(sentence)
    passages: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current}\n{piece}" if current else piece
        if current and len(joined) > target:
            passages.append(current)
            current = piece
        else:
            current = joined
    if current:
        passages.append(current)
    return passages


# --- terms -----------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def runs(text: str) -> Iterator[tuple[str, bool]]:
    """(run, is_cjk) for each run of CJK characters or of letters and digits."""
    for match in RUNS.finditer(normalize(text)):
        run = match.group()
        yield run, bool(CJK_CHAR.match(run))


def trigrams(run: str) -> list[str]:
    return [run[i : i + 3] for i in range(len(run) - 2)]


def query_terms(query: str) -> tuple[list[str], list[str]]:
    """(terms of three or more characters, shorter terms), in query order, deduplicated."""
    long: dict[str, None] = {}
    short: dict[str, None] = {}
    for run, cjk in runs(query):
        if len(run) < 3:
            if not cjk and run in STOPWORDS:
                continue
            short[run] = None
        elif cjk:
            for gram in trigrams(run):
                long[gram] = None
        elif run not in STOPWORDS:
            long[run] = None
    return list(long)[:MAX_TERMS], list(short)[:MAX_SHORT_TERMS]


def passage_grams(text: str) -> list[str]:
    """The lexemes of a passage's PostgreSQL index: the trigrams of each run, or a short run itself."""
    grams: dict[str, None] = {}
    for run, _ in runs(text):
        for gram in trigrams(run) if len(run) >= 3 else [run]:
            grams[gram] = None
    return list(grams)


def _tsquery_literal(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def _fts_literal(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


# --- indexing --------------------------------------------------------------------------------------------
def watermark(db: Database) -> int:
    return int(kv.get_value(db, WATERMARK_KEY, "0") or 0)


def index_pending(db: Database, settings: Settings, limit: int = BATCH_DOCS) -> int:
    """Index up to `limit` documents not indexed yet; returns how many were indexed."""
    mark = watermark(db)
    unindexed = sa.and_(
        documents.c.id > mark,
        ~sa.exists().where(rag_passages.c.doc_id == documents.c.id),
    )
    with db.read() as conn:
        rows = conn.execute(
            sa.select(documents.c.id, documents.c.text).where(unindexed).order_by(documents.c.id).limit(limit)
        ).all()
    if rows:
        values = []
        for doc_id, text in rows:
            pieces = split_passages(text or "", settings.rag_passage_chars) or [""]  # "" marks it indexed
            for number, piece in enumerate(pieces):
                value: dict[str, Any] = {"doc_id": doc_id, "ord": number, "text": piece}
                if db.backend == "postgresql":
                    value["gram_list"] = passage_grams(piece)
                values.append(value)
        with db.begin() as conn:
            _insert_passages(db, conn, values)
    _advance_watermark(db, mark, unindexed)
    return len(rows)


def _insert_passages(db: Database, conn: sa.Connection, values: list[dict[str, Any]]) -> None:
    if db.backend == "postgresql":
        from sqlalchemy.dialects import postgresql

        grams = sa.func.array_to_tsvector(sa.bindparam("gram_list", type_=postgresql.ARRAY(sa.Text)))
        statement = (
            postgresql.insert(rag_passages)
            .values(
                doc_id=sa.bindparam("doc_id"), ord=sa.bindparam("ord"), text=sa.bindparam("text"), grams=grams
            )
            .on_conflict_do_nothing(index_elements=["doc_id", "ord"])
        )
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(rag_passages).on_conflict_do_nothing(index_elements=["doc_id", "ord"])
    # A document deleted since it was read has no row to point at: its passages are skipped.
    existing = set(
        conn.execute(
            sa.select(documents.c.id).where(documents.c.id.in_({v["doc_id"] for v in values}))
        ).scalars()
    )
    values = [v for v in values if v["doc_id"] in existing]
    if values:
        conn.execute(statement, values)


def _advance_watermark(db: Database, mark: int, unindexed: sa.ColumnElement[bool]) -> None:
    """Move the watermark up to the first document still to index, but not past ids younger than
    SETTLE_SEC (a slower transaction may still commit a smaller id)."""
    with db.read() as conn:
        first_missing = conn.execute(sa.select(sa.func.min(documents.c.id)).where(unindexed)).scalar()
        settled = conn.execute(
            sa.select(sa.func.max(documents.c.id)).where(
                documents.c.id > mark, documents.c.created_at < db.now() - SETTLE_SEC
            )
        ).scalar()
    if settled is None:
        return
    new = int(settled) if first_missing is None else min(int(settled), int(first_missing) - 1)
    if new > mark:
        kv.set_value(db, WATERMARK_KEY, str(new))


def indexed_passages(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(rag_passages)).scalar() or 0)


# --- search ----------------------------------------------------------------------------------------------
def search(db: Database, query: str, limit: int) -> list[Hit]:
    """The passages most relevant to `query`, best first (of documents allowed for training)."""
    long, short = query_terms(query)
    if not long and not short:
        return []
    if db.backend == "postgresql":
        hits = _search_postgres(db, long, short, limit * 3)
    else:
        hits = _search_sqlite(db, long, short, limit * 3)
    per_doc: dict[int, int] = {}
    out = []
    for hit in hits:
        if per_doc.get(hit.doc_id, 0) >= PER_DOCUMENT or not hit.text.strip():
            continue
        per_doc[hit.doc_id] = per_doc.get(hit.doc_id, 0) + 1
        out.append(hit)
        if len(out) >= limit:
            break
    return out


def _search_sqlite(db: Database, long: list[str], short: list[str], limit: int) -> list[Hit]:
    terms = list(long)
    with db.read() as conn:
        for term in short:
            expansions = conn.execute(
                sa.text(
                    "SELECT term FROM rag_vocab WHERE term >= :low AND term < :high "
                    "ORDER BY doc DESC LIMIT :n"
                ),
                {"low": term, "high": term + "\U0010ffff", "n": PREFIX_EXPANSIONS},
            ).scalars()
            terms += list(expansions)
        if not terms:
            return []
        rows = conn.execute(
            sa.text(
                "SELECT p.id, p.doc_id, d.url, d.title, p.text, bm25(rag_fts) AS score "
                "FROM rag_fts JOIN rag_passages p ON p.id = rag_fts.rowid "
                "JOIN documents d ON d.id = p.doc_id "
                "WHERE rag_fts MATCH :match AND d.allowed_for_training = 1 "
                "ORDER BY score LIMIT :limit"
            ),
            {"match": " OR ".join(_fts_literal(term) for term in terms), "limit": limit},
        ).all()
    return [Hit(row[0], row[1], row[2], row[3], row[4], -float(row[5])) for row in rows]


def _search_postgres(db: Database, long: list[str], short: list[str], limit: int) -> list[Hit]:
    parts = []
    for term in long:
        grams = trigrams(term) if len(term) > 3 else [term]
        parts.append("(" + " & ".join(_tsquery_literal(gram) for gram in grams) + ")")
    parts += [_tsquery_literal(term) + ":*" for term in short]
    with db.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.id, p.doc_id, d.url, d.title, p.text, ts_rank(p.grams, q) AS score "
                "FROM rag_passages p JOIN documents d ON d.id = p.doc_id, CAST(:query AS tsquery) q "
                "WHERE p.grams @@ q AND d.allowed_for_training "
                "ORDER BY score DESC, p.id DESC LIMIT :limit"
            ),
            {"query": " | ".join(parts), "limit": limit},
        ).all()
    return [Hit(row[0], row[1], row[2], row[3], row[4], float(row[5])) for row in rows]


# --- the indexer thread ---------------------------------------------------------------------------------
class Indexer:
    """Keeps the passage index up to date in a thread of the inference engine (when ENABLE_RAG=1)."""

    def __init__(self, db: Database, settings: Settings, busy: Callable[[], bool] = lambda: False) -> None:
        self.db, self.settings = db, settings
        self.busy = busy  # True while requests are being answered: indexing (Python, the GIL) waits
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.indexed = 0
        self._reported = 0
        self.error = ""

    def start(self) -> None:
        if self.settings.enable_rag:
            self._thread = threading.Thread(target=self._loop, name="rag-indexer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # While requests are answered, small batches with pauses: indexing is Python work that
            # holds the GIL the decoding thread needs between its steps.
            busy = self.busy()
            limit = BUSY_BATCH_DOCS if busy else BATCH_DOCS
            try:
                count = index_pending(self.db, self.settings, limit)
                self.indexed += count
                self.error = ""
            except Exception as exc:  # a database hiccup: report it, try again at the next poll
                count = 0
                self.error = f"RAG indexing failed: {type(exc).__name__}: {exc}"
                log.warning("%s", self.error)
            if count < limit:  # caught up: wait for new documents
                self._stop.wait(self.settings.rag_index_poll_sec)
            elif busy:
                self._stop.wait(BUSY_PAUSE_SEC)

    def take_counts(self) -> dict[str, int]:
        new, self._reported = self.indexed - self._reported, self.indexed
        return {"rag_documents_indexed": new} if new else {}

    def report(self, ctx: Any) -> None:
        counts = self.take_counts()
        if counts:
            ctx.count(**counts)
