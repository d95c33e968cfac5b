"""`aifactory ingest PATH...`: local files through the same pipeline as crawled pages."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aifactory.db import Database
from aifactory.db import policies as policy_db
from aifactory.settings import Settings
from aifactory.sources.files import SkippedFile, iter_paths, read_file
from aifactory.text.engine import make_pool
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze_many, store

BATCH = 64


def _documents(paths: list[Path], skipped: list[str]) -> Iterator[RawDocument]:
    for path in iter_paths(paths):
        try:
            yield from read_file(path)
        except (SkippedFile, OSError, UnicodeError) as exc:
            skipped.append(str(exc))


def ingest(
    settings: Settings,
    db: Database,
    paths: list[Path],
    *,
    show_progress: bool = True,
    workers: int | None = None,
) -> tuple[Counter[str], list[str]]:
    """Ingest files and folders; returns outcome counts and the files skipped (with why)."""
    config = PipelineConfig.from_settings(settings)
    policies = policy_db.load(db)
    totals: Counter[str] = Counter()
    skipped: list[str] = []
    started = time.monotonic()
    seen = 0
    with make_pool(workers) as pool:
        batch: list[RawDocument] = []
        for raw in _documents(paths, skipped):
            batch.append(raw)
            if len(batch) >= BATCH:
                seen += len(batch)
                totals += store(
                    db, analyze_many(batch, config, pool), policies, dedup=settings.enable_text_dedup
                )
                batch = []
                if show_progress:
                    rate = seen / max(1e-6, time.monotonic() - started)
                    print(
                        f"\r{seen} read, {totals['docs.stored']} stored ({rate:.0f}/s)",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
        if batch:
            seen += len(batch)
            totals += store(db, analyze_many(batch, config, pool), policies, dedup=settings.enable_text_dedup)
    if show_progress:
        print(f"\r{seen} read, {totals['docs.stored']} stored", file=sys.stderr, flush=True)
    totals["docs.read"] = seen
    return totals, skipped
