"""The incremental dataset build: tokenize the documents that are new since the last build, only them.

    scan new ids (watermark)  →  chunks of ids  →  encode in worker processes  →  append in id order
    →  split + weight each document  →  commit (fsync, atomic manifest)  →  record a dataset version

Its cost is proportional to what is new: documents at or below the watermark are never read again.
Two builds give the same tokens and the same split whether the corpus arrived in one go or in many
steps, because documents are appended in id order and the split depends on the URL alone (plus the
validation cap, reached at the same document either way).

On PostgreSQL a document id is handed out at insert and becomes visible at commit, so a slow
transaction can make id 41 appear after id 42 was built. Ids skipped over are remembered as *gaps* for
GAP_SETTLE_SEC and looked at again by the next builds; after that a gap is an id that was never used
(a rolled-back insert, or ON CONFLICT DO NOTHING burning a sequence value) and is forgotten.
"""

from __future__ import annotations

import bisect
import errno
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aifactory.autotune import cpu_cores
from aifactory.cluster import lifeline
from aifactory.dataset import DatasetError, corpus, records, rules
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.encode import EncodedChunk, Encoder, encode_in_worker, init_worker
from aifactory.dataset.lock import dataset_lock
from aifactory.dataset.shards import (
    INDEX_DTYPE,
    TRAIN,
    VAL,
    Manifest,
    ShardWriter,
    generation_dir,
    load_manifest,
    read_index,
)
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.settings import Settings

GAP_SETTLE_SEC = 3600.0
MAX_GAPS = 20_000  # the newest are kept; a pathological number of burnt ids must not bloat the manifest
CHUNK_DOCS = 256
CHUNK_CHARS = 1_000_000
COMMIT_EVERY_SEC = 30.0  # a long build publishes its progress, so a crash loses at most this much work
SMALL_BUILD_CHARS = 2_000_000  # below this, starting worker processes costs more than they save


@dataclass
class BuildProgress:
    documents_done: int
    documents_total: int
    tokens: int
    seconds: float


@dataclass
class BuildReport:
    tag: str
    generation: int
    new_documents: int = 0
    new_tokens: int = 0
    skipped: int = 0  # the tokenizer failed on them
    other_language: int = 0
    documents: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    seconds: float = 0.0
    workers: int = 1
    stopped: bool = False
    failures: dict[int, str] = field(default_factory=dict)  # the first few skipped documents and why

    @property
    def up_to_date(self) -> bool:
        return self.new_documents == 0 and self.skipped == 0 and self.other_language == 0

    def summary(self) -> str:
        if self.up_to_date:
            return (
                f"dataset {self.tag} is up to date: {self.documents:,} documents, "
                f"{self.train_tokens:,} training tokens"
            )
        rate = self.new_tokens / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"dataset {self.tag}: +{self.new_documents:,} documents, +{self.new_tokens:,} tokens in "
            f"{self.seconds:.1f}s ({rate:,.0f} tokens/s, {self.workers} processes); now {self.documents:,} "
            f"documents, {self.train_tokens:,} training and {self.val_tokens:,} validation tokens"
        )
        if self.skipped:
            text += f"; {self.skipped} skipped (the tokenizer failed on them)"
        if self.other_language:
            text += f"; {self.other_language} in other languages"
        return text + (" (stopped early; the rest follows at the next build)" if self.stopped else "")


class Gaps:
    """Id ranges below the watermark not seen yet, sorted, each with when it was first noticed."""

    def __init__(self, ranges: list[list[float]], now: float) -> None:
        kept = sorted((int(lo), int(hi), seen) for lo, hi, seen in ranges if now - seen < GAP_SETTLE_SEC)
        self.los = [lo for lo, _, _ in kept]
        self.his = [hi for _, hi, _ in kept]
        self.seen = [seen for _, _, seen in kept]

    def floor(self, watermark: int) -> int:
        """Scan from here: the lowest id that may still appear."""
        return min(self.los[0] - 1, watermark) if self.los else watermark

    def add(self, lo: int, hi: int, now: float) -> None:
        self.los.append(lo)
        self.his.append(hi)
        self.seen.append(now)

    def contains(self, doc_id: int) -> bool:
        at = bisect.bisect_right(self.los, doc_id) - 1
        return at >= 0 and doc_id <= self.his[at]

    def take(self, doc_id: int) -> bool:
        """True if the id lies in a gap (which then no longer contains it)."""
        at = bisect.bisect_right(self.los, doc_id) - 1
        if at < 0 or doc_id > self.his[at]:
            return False
        lo, hi, seen = self.los[at], self.his[at], self.seen[at]
        pieces = [(a, b) for a, b in ((lo, doc_id - 1), (doc_id + 1, hi)) if a <= b]
        self.los[at : at + 1] = [a for a, _ in pieces]
        self.his[at : at + 1] = [b for _, b in pieces]
        self.seen[at : at + 1] = [seen] * len(pieces)
        return True

    def as_list(self) -> list[list[float]]:
        start = max(0, len(self.los) - MAX_GAPS)
        return [[lo, hi, seen] for lo, hi, seen in zip(self.los, self.his, self.seen, strict=True)][start:]


def pending(db: Database, manifest: Manifest) -> tuple[int, int]:
    """(documents, characters) a build would look at: above the watermark, or late arrivals in a gap."""
    gaps = Gaps(manifest.gaps, time.time())
    count, chars = corpus.count_after(db, manifest.watermark)
    floor = gaps.floor(manifest.watermark)
    if floor < manifest.watermark:
        count += sum(gaps.contains(doc_id) for doc_id in corpus.ids_between(db, floor, manifest.watermark))
    return count, chars


@dataclass
class Chunk:
    docs: list[corpus.DocumentMeta]
    last_id: int  # every id up to here was looked at when the chunk was cut
    gaps: list[list[float]]  # the gaps open at that moment
    other_language: int  # documents passed over for their language since the previous chunk


def plan_chunks(db: Database, manifest: Manifest) -> Iterator[Chunk]:
    """The documents to tokenize, in id order, in chunks of about CHUNK_CHARS characters."""
    now = time.time()
    gaps = Gaps(manifest.gaps, now)
    languages = set(manifest.languages)
    previous = last = manifest.watermark
    docs: list[corpus.DocumentMeta] = []
    chars = other = 0
    for meta in corpus.metadata_after(db, gaps.floor(manifest.watermark)):
        if meta.id <= manifest.watermark:
            if not gaps.take(meta.id):
                continue  # tokenized (or passed over) by an earlier build
        else:
            if meta.id > previous + 1:
                gaps.add(previous + 1, meta.id - 1, now)
            previous = last = meta.id
        if languages and meta.language not in languages:
            other += 1
            continue
        docs.append(meta)
        chars += meta.chars
        if len(docs) >= CHUNK_DOCS or chars >= CHUNK_CHARS:
            yield Chunk(docs, last, gaps.as_list(), other)
            docs, chars, other = [], 0, 0
    yield Chunk(docs, last, gaps.as_list(), other)  # maybe empty: it still moves the watermark


class Encoding:
    """Encodes chunks in a process pool (or in this process for small builds), results in order."""

    def __init__(self, db: Database, tokenizer: tokenizers.Tokenizer, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        bos = tokenizer.bos_id if tokenizer.info.add_bos else None
        args = (str(tokenizer.model_path), bos, tokenizer.eos_id, tokenizer.dtype.name)
        if workers > 1:
            # Spawned workers that end with their node, however it ends (see cluster.lifeline).
            self.pool = lifeline.process_pool(workers, initializer=init_worker, initargs=(db.url, *args))
        else:
            self.local = Encoder(db, *args)

    def run(self, chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, EncodedChunk]]:
        in_flight = 2 * self.workers  # enough to keep every worker busy, few enough to bound memory
        pending: deque[tuple[Chunk, Future[EncodedChunk] | EncodedChunk]] = deque()
        for chunk in chunks:
            ids = [doc.id for doc in chunk.docs]
            job = self.pool.submit(encode_in_worker, ids) if self.pool else self.local.encode_chunk(ids)
            pending.append((chunk, job))
            while len(pending) >= in_flight:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    @staticmethod
    def _result(chunk: Chunk, job: Future[EncodedChunk] | EncodedChunk) -> tuple[Chunk, EncodedChunk]:
        return chunk, job.result() if isinstance(job, Future) else job

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def new_manifest(settings: Settings, tokenizer: tokenizers.Tokenizer) -> Manifest:
    return Manifest(
        generation=tokenizer.generation,
        tokenizer_hash=tokenizer.hash,
        vocab_size=tokenizer.vocab_size,
        dtype=tokenizer.dtype.name,
        languages=settings.languages(),
        val_fraction=settings.dataset_val_fraction,
        val_max_tokens=settings.dataset_val_max_tokens,
        val_min_tokens=settings.dataset_val_min_tokens_per_language,
    )


def open_manifest(settings: Settings, tokenizer: tokenizers.Tokenizer) -> Manifest:
    manifest = load_manifest(generation_dir(settings.data_dir, tokenizer.generation))
    if manifest is None:
        return new_manifest(settings, tokenizer)
    if manifest.tokenizer_hash != tokenizer.hash:
        raise DatasetError(
            f"the dataset of generation {tokenizer.generation} was built with tokenizer "
            f"{manifest.tokenizer_hash[:12]}, but {tokenizer.directory} is {tokenizer.hash[:12]}"
        )
    if manifest.val_tokens and not manifest.val_tokens_by_language:
        # Built before validation was counted per language: count it from the index once.
        directory = generation_dir(settings.data_dir, tokenizer.generation)
        index = read_index(directory, manifest)
        for code, name in enumerate(manifest.language_codes):
            mine = index[(index["language"] == code) & (index["split"] == VAL)]
            if mine.size:
                manifest.val_tokens_by_language[name] = int(mine["length"].astype(np.int64).sum())
    return manifest


def code_of(names: list[str], name: str, what: str) -> int:
    if name not in names:
        if len(names) >= 255:
            raise DatasetError(f"more than 255 different {what} in one dataset")
        names.append(name)
    return names.index(name)


def append_chunk(
    settings: Settings,
    writer: ShardWriter,
    chunk: Chunk,
    encoded: EncodedChunk,
    policies: list,
) -> tuple[int, int]:
    """Split, weigh and append one encoded chunk; returns (documents, tokens) appended."""
    manifest = writer.manifest
    keep = [(doc, int(n)) for doc, n in zip(chunk.docs, encoded.lengths, strict=True) if n > 0]
    manifest.skipped += len(encoded.failures)
    if not keep:
        return 0, 0
    records = np.zeros(len(keep), INDEX_DTYPE)
    by_language = manifest.val_tokens_by_language
    for i, (doc, length) in enumerate(keep):
        have = by_language.get(doc.language, 0)
        val = rules.is_validation(
            doc.url, manifest.val_fraction, have, manifest.val_max_tokens, manifest.val_min_tokens
        )
        if val:
            manifest.val_tokens += length
            by_language[doc.language] = have + length
        else:
            manifest.train_tokens += length
        records[i]["doc_id"] = doc.id
        records[i]["length"] = length
        records[i]["split"] = VAL if val else TRAIN
        records[i]["source"] = code_of(manifest.sources, doc.source_type, "sources")
        records[i]["language"] = code_of(manifest.language_codes, doc.language, "languages")
        records[i]["quality"] = doc.quality
        records[i]["domain"] = writer.domain_code(doc.domain)
    domains = [doc.domain for doc, _ in keep]
    local_names, local_codes = np.unique(np.array(domains, dtype=object), return_inverse=True)
    records["weight"] = rules.document_weights(
        settings,
        policies,
        manifest.sources,
        list(local_names),
        records["source"],
        local_codes.reshape(-1),
        records["quality"],
    )
    tokens = np.frombuffer(encoded.tokens, dtype=manifest.token_dtype)
    writer.append(tokens, records)
    return len(keep), int(tokens.size)


def per_source(directory: Path, manifest: Manifest) -> dict[str, dict[str, int]]:
    index = read_index(directory, manifest)
    out = {}
    for code, name in enumerate(manifest.sources):
        mine = index[index["source"] == code]
        lengths = mine["length"].astype(np.int64)
        out[name] = {
            "documents": int(mine.size),
            "train_tokens": int(lengths[mine["split"] == TRAIN].sum()),
            "val_tokens": int(lengths[mine["split"] == VAL].sum()),
        }
    return out


def build(
    settings: Settings,
    db: Database,
    *,
    node_id: str = "",
    progress: Callable[[BuildProgress], None] | None = None,
    stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> BuildReport:
    """Tokenize every document not tokenized yet into the newest generation's shards, holding the
    dataset lock (dataset/lock.py): a second builder waits for this one, or refuses."""
    holder = f"the dataset engine of node {node_id}, pid {os.getpid()}" if node_id else ""
    with dataset_lock(settings.data_dir, settings.dataset_lock_wait_sec, holder):
        return _build(settings, db, node_id=node_id, progress=progress, stop=stop, workers=workers)


def _build(
    settings: Settings,
    db: Database,
    *,
    node_id: str,
    progress: Callable[[BuildProgress], None] | None,
    stop: Callable[[], bool] | None,
    workers: int | None,
) -> BuildReport:
    tokenizer = tokenizers.current(settings.data_dir)
    if tokenizer is None:
        raise DatasetError(
            "no tokenizer yet: the dataset engine trains one once the corpus has "
            f"TOKENIZER_MIN_CORPUS_CHARS={settings.tokenizer_min_corpus_chars:,} characters "
            "(or run `aifactory tokenizer train`)"
        )
    directory = generation_dir(settings.data_dir, tokenizer.generation)
    manifest = open_manifest(settings, tokenizer)
    before = (manifest.tag, manifest.documents)  # what stays usable if this build fails
    report = BuildReport(tag=manifest.tag, generation=manifest.generation)
    started = time.monotonic()
    total_docs, total_chars = pending(db, manifest)
    if total_docs == 0:
        return _finish(report, manifest, started)
    count = workers or settings.dataset_build_workers or cpu_cores()
    count = 1 if total_chars < SMALL_BUILD_CHARS else count
    report.workers = count
    policies = policy_db.load(db)
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(directory, manifest, settings.dataset_shard_tokens)
    encoding = Encoding(db, tokenizer, count)
    committed = time.monotonic()
    changed = False
    try:
        for chunk, encoded in encoding.run(plan_chunks(db, manifest)):
            changed = changed or bool(
                chunk.docs
                or chunk.other_language
                or chunk.last_id > manifest.watermark
                or chunk.gaps != manifest.gaps
            )
            documents, tokens = append_chunk(settings, writer, chunk, encoded, policies)
            if documents and not report.new_documents:
                manifest.version += 1  # this build makes a new version
            manifest.watermark = max(manifest.watermark, chunk.last_id)
            manifest.gaps = chunk.gaps
            manifest.other_language += chunk.other_language
            report.new_documents += documents
            report.new_tokens += tokens
            report.skipped += len(encoded.failures)
            report.other_language += chunk.other_language
            for doc_id, why in list(encoded.failures.items())[: 20 - len(report.failures)]:
                report.failures[doc_id] = why
            if progress is not None:
                done = report.new_documents + report.skipped + report.other_language
                progress(BuildProgress(done, total_docs, report.new_tokens, time.monotonic() - started))
            if time.monotonic() - committed >= COMMIT_EVERY_SEC:
                writer.commit()
                committed = time.monotonic()
            if stop is not None and stop():
                report.stopped = True
                break
        if changed:
            writer.commit()
    except OSError as exc:
        raise _write_error(exc, directory, *before) from None
    except BrokenProcessPool:
        raise DatasetError(
            f"an encoding process died (out of memory?); the dataset stays at {before[0]}"
        ) from None
    finally:
        encoding.close()
        writer.close()
    report.tag = manifest.tag
    if report.new_documents:
        totals = corpus.pipeline_totals(db)
        records.record_version(
            db,
            {
                "tag": manifest.tag,
                "generation": manifest.generation,
                "tokenizer_hash": manifest.tokenizer_hash,
                "documents": manifest.documents,
                "new_documents": report.new_documents,
                "train_tokens": manifest.train_tokens,
                "val_tokens": manifest.val_tokens,
                "skipped": manifest.skipped,
                "per_source": per_source(directory, manifest),
                "build_seconds": round(time.monotonic() - started, 3),
                "node_id": node_id,
                **totals,
            },
        )
    return _finish(report, manifest, started)


def _finish(report: BuildReport, manifest: Manifest, started: float) -> BuildReport:
    report.documents = manifest.documents
    report.train_tokens = manifest.train_tokens
    report.val_tokens = manifest.val_tokens
    report.seconds = time.monotonic() - started
    return report


def _write_error(exc: OSError, directory: Path, tag: str, documents: int) -> DatasetError:
    what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"cannot write: {exc}"
    return DatasetError(
        f"dataset build failed, {what} ({directory}); the previous version {tag} "
        f"({documents:,} documents) stays usable: free space and build again"
    )
