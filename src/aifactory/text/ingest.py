"""`aifactory ingest PATH...`: local files through the same pipeline as crawled pages."""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from pathlib import Path

from aifactory.autotune import cpu_cores
from aifactory.db import Database
from aifactory.db import policies as policy_db
from aifactory.settings import Settings
from aifactory.sources.files import SkippedFile, iter_paths, read_file
from aifactory.text.engine import make_pool
from aifactory.text.pipeline import Analyzed, PipelineConfig, RawDocument, analyze, store

BATCH = 64
CHUNK = 4  # pages per task sent to a worker: fewer round trips, still an even spread


def _documents(paths: list[Path], skipped: list[str], passed_over: Counter[str]) -> Iterator[RawDocument]:
    for path in iter_paths(paths, passed_over):
        try:
            yield from read_file(path)
        except (SkippedFile, OSError, UnicodeError) as exc:
            skipped.append(str(exc))


def _batches(raws: Iterable[RawDocument]) -> Iterator[list[RawDocument]]:
    iterator = iter(raws)
    while batch := list(itertools.islice(iterator, BATCH)):
        yield batch


def ingest(
    settings: Settings,
    db: Database,
    paths: list[Path],
    *,
    show_progress: bool = True,
    workers: int | None = None,
    pool: Executor | None = None,
) -> tuple[Counter[str], list[str]]:
    """Ingest files and folders; returns outcome counts and the files skipped (with why).

    Nothing else runs beside an ingest, so it has a worker per core. While the workers analyze one
    batch, this process reads the next files and stores the batch before (deduplication and the
    database insert): the workers never wait for the database. `pool`: workers already started (a
    benchmark's), used instead of starting `workers` new ones. Files passed over inside folders are
    summed up as one line each ("3 hidden files", "2 files of type .pdf"), so a folder that yields
    nothing says why."""
    config = PipelineConfig.from_settings(settings)
    policies = policy_db.load(db)
    totals: Counter[str] = Counter()
    skipped: list[str] = []
    passed_over: Counter[str] = Counter()
    started = time.monotonic()
    seen = 0

    def save(results: Iterable[list[Analyzed]]) -> None:
        nonlocal totals
        docs = [doc for parts in results for doc in parts]
        totals += store(
            db,
            docs,
            policies,
            dedup=settings.enable_text_dedup,
            rejections_max_rows=settings.rejections_max_rows,
        )
        if show_progress:
            rate = seen / max(1e-6, time.monotonic() - started)
            print(
                f"\r{seen} read, {totals['docs.stored']} stored ({rate:.0f}/s)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    with contextlib.nullcontext(pool) if pool is not None else make_pool(workers or cpu_cores()) as pool:
        previous: Iterable[list[Analyzed]] | None = None
        for batch in _batches(_documents(paths, skipped, passed_over)):
            seen += len(batch)
            current = pool.map(analyze, batch, itertools.repeat(config), chunksize=CHUNK)  # runs from now on
            if previous is not None:
                save(previous)
            previous = current
        if previous is not None:
            save(previous)
    if show_progress:
        print(f"\r{seen} read, {totals['docs.stored']} stored", file=sys.stderr, flush=True)
    totals["docs.read"] = seen
    for reason, count in sorted(passed_over.items()):
        files = f"file{'s' if count > 1 else ''}"
        if reason == "hidden":
            skipped.append(f"{count} hidden {files} (names starting with a dot)")
        else:
            skipped.append(f"{count} {files} of type {reason} (use .txt, .md, .html, .jsonl or a wiki dump)")
    return totals, skipped
