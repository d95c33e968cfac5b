"""The dataset engine (master only): trains the tokenizer once, then keeps the token shards current.

Each pass: no tokenizer yet → wait until the allowed corpus reaches TOKENIZER_MIN_CORPUS_CHARS, then
train generation 1. Otherwise count the documents above the watermark and build when there are
DATASET_BUILD_MIN_NEW_DOCS of them, or when some have waited DATASET_BUILD_MAX_WAIT_SEC. An empty
corpus, or one still too small, is a phase with a reason ("waiting"), never an error loop; a failed build
(full disk) is reported and retried later while the previous version stays in use.
"""

from __future__ import annotations

import time

from aifactory.autotune import resolve_profile
from aifactory.cluster.context import EngineContext
from aifactory.dataset import DatasetError, corpus, records
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.builder import BuildProgress, Gaps, build, open_manifest, pending
from aifactory.settings import Settings

ERROR_BACKOFF_SEC = 600.0  # after a failed build (disk full...), try again this much later


def train_tokenizer(settings: Settings, db, generation: int, node_id: str = "") -> tokenizers.Tokenizer:
    """Train `generation` on a bounded sample of the allowed corpus and record it."""
    languages = settings.languages()
    sample = corpus.tokenizer_sample(db, languages, settings.tokenizer_sample_chars, seed=generation)
    tokenizer = tokenizers.train(
        settings.data_dir,
        generation,
        sample,
        vocab_size=settings.train_vocab_size,
        model_type=settings.tokenizer_model_type,
        threads=resolve_profile(settings).spm_num_threads,
        languages=languages,
    )
    records.record_tokenizer(db, tokenizer, node_id)
    return tokenizer


def pending_documents(settings: Settings, db, tokenizer: tokenizers.Tokenizer) -> tuple[int, float]:
    """(documents above the watermark, seconds the oldest of them has waited)."""
    manifest = open_manifest(settings, tokenizer)
    count, _ = pending(db, manifest)
    floor = Gaps(manifest.gaps, time.time()).floor(manifest.watermark)
    return count, corpus.oldest_age_after(db, floor) if count else 0.0


def step(ctx: EngineContext) -> None:
    """One pass of the engine (the tests call it directly)."""
    settings, db = ctx.settings, ctx.db
    tokenizer = tokenizers.current(settings.data_dir)
    if tokenizer is None:
        chars = sum(corpus.allowed_chars(db, settings.languages()).values())
        needed = settings.tokenizer_min_corpus_chars
        if chars < needed:
            what = "no documents yet" if chars == 0 else f"{chars:,} characters of allowed text"
            ctx.set_phase("waiting", f"{what}; the tokenizer is trained at {needed:,}")
            return
        ctx.set_phase("tokenizer", f"training the tokenizer on a sample of {chars:,} characters")
        tokenizer = train_tokenizer(settings, db, 1, ctx.node_id)
        ctx.log(f"trained {tokenizer.describe()} in {tokenizer.info.train_seconds:.0f}s")
    pending, age = pending_documents(settings, db, tokenizer)
    if pending == 0:
        ctx.set_phase("idle", "the dataset is up to date")
        return
    wait = settings.dataset_build_max_wait_sec
    if pending < settings.dataset_build_min_new_docs and wait > 0 and age < wait:
        ctx.set_phase(
            "waiting", f"{pending:,} new documents; building at {settings.dataset_build_min_new_docs:,}"
        )
        return

    def progress(p: BuildProgress) -> None:
        rate = p.tokens / p.seconds if p.seconds else 0.0
        ctx.set_phase(
            "building", f"{p.documents_done:,} of {p.documents_total:,} documents, {rate:,.0f} tokens/s"
        )

    report = build(settings, db, node_id=ctx.node_id, progress=progress, stop=ctx.stopping)
    ctx.count(
        dataset_builds=1,
        dataset_documents=report.new_documents,
        dataset_tokens=report.new_tokens,
        dataset_skipped=report.skipped,
    )
    if report.failures:
        ctx.log(f"the tokenizer failed on documents {sorted(report.failures)}", level="warning")
    ctx.log(report.summary())
    ctx.set_phase("idle", report.summary())


def run(ctx: EngineContext) -> None:
    while not ctx.stopping():
        pause = ctx.settings.dataset_poll_sec
        try:
            step(ctx)
        except DatasetError as exc:
            ctx.set_phase("error", str(exc))
            ctx.log(str(exc), level="error")
            pause = max(pause, ERROR_BACKOFF_SEC)
        if ctx.wait(pause):
            return
