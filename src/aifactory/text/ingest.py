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


def _documents(paths: list[Path], skipped: list[str], passed_over: Counter[str]) -> Iterator[RawDocument]:
    for path in iter_paths(paths, passed_over):
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
    """Ingest files and folders; returns outcome counts and the files skipped (with why).

    Files passed over inside folders are summed up as one line each ("3 hidden files", "2 .pdf files"),
    so a folder that yields nothing says why."""
    config = PipelineConfig.from_settings(settings)
    policies = policy_db.load(db)
    totals: Counter[str] = Counter()
    skipped: list[str] = []
    passed_over: Counter[str] = Counter()
    started = time.monotonic()
    seen = 0
    with make_pool(workers) as pool:
        batch: list[RawDocument] = []
        for raw in _documents(paths, skipped, passed_over):
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
    for reason, count in sorted(passed_over.items()):
        files = f"file{'s' if count > 1 else ''}"
        if reason == "hidden":
            skipped.append(f"{count} hidden {files} (names starting with a dot)")
        else:
            skipped.append(f"{count} {files} of type {reason} (use .txt, .md, .html, .jsonl or a wiki dump)")
    return totals, skipped
