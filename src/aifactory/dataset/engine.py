"""The dataset engine (master only): trains the tokenizer once, then keeps the token shards current.

Each pass: no tokenizer yet → wait until the allowed corpus reaches TOKENIZER_MIN_CORPUS_CHARS, saying
how far it is and what the crawl still has to bring; when the crawl has run out (nothing queued, nothing
waiting for the text engine) and no new text has arrived for TOKENIZER_STALL_SEC, train on what there is
if it is at least TOKENIZER_FLOOR_CHARS — a small site must not leave the factory waiting forever.
Otherwise count the documents above the watermark and build when there are DATASET_BUILD_MIN_NEW_DOCS of
them, or when some have waited DATASET_BUILD_MAX_WAIT_SEC. A language of TRAIN_LANG_ONLY the tokenizer
was trained without is a warning in the status; once it is TOKENIZER_NEW_LANGUAGE_SHARE of the corpus a
new generation is proposed (and trained, with TOKENIZER_AUTO_NEW_GENERATION=1). An empty corpus, or one
still too small, is a phase with a reason ("waiting"), never an error loop; a failed build (full disk)
is reported and retried later while the previous version stays in use.
"""

from __future__ import annotations

import math
import time

from aifactory.autotune import resolve_profile
from aifactory.cluster.context import EngineContext
from aifactory.dataset import DatasetError, corpus, records
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.builder import BuildProgress, Gaps, build, open_manifest, pending
from aifactory.settings import Settings

ERROR_BACKOFF_SEC = 600.0  # after a failed build (disk full...), try again this much later
LANGUAGE_CHECK_SEC = 600.0  # how often the corpus is measured for languages the tokenizer lacks
NEW_LANGUAGE_MIN_CHARS = 50_000  # ...and the least text of such a language worth a new generation


def train_tokenizer(
    settings: Settings, db, generation: int, node_id: str = "", note: str = ""
) -> tokenizers.Tokenizer:
    """Train `generation` on a bounded sample of the allowed corpus, balanced across its languages,
    and record it."""
    languages = settings.languages()
    available = corpus.sample_chars(db, languages)
    plan = corpus.sample_plan(available, settings.tokenizer_sample_chars)
    sample = corpus.tokenizer_sample(
        db, languages, settings.tokenizer_sample_chars, seed=generation, plan=plan
    )
    tokenizer = tokenizers.train(
        settings.data_dir,
        generation,
        sample,
        vocab_size=settings.train_vocab_size,
        model_type=settings.tokenizer_model_type,
        threads=resolve_profile(settings).spm_num_threads,
        corpus_chars=available,
        note=note,
    )
    records.record_tokenizer(db, tokenizer, node_id)
    return tokenizer


def pending_documents(settings: Settings, db, tokenizer: tokenizers.Tokenizer) -> tuple[int, float]:
    """(documents above the watermark, seconds the oldest of them has waited)."""
    manifest = open_manifest(settings, tokenizer)
    count, _ = pending(db, manifest)
    floor = Gaps(manifest.gaps, time.time()).floor(manifest.watermark)
    return count, corpus.oldest_age_after(db, floor) if count else 0.0


def first_tokenizer(ctx: EngineContext) -> tokenizers.Tokenizer | None:
    """Train generation 1 once the corpus is big enough (or the crawl has run out); else say, as the
    phase, how far the corpus is and what it is waiting for, and return None."""
    settings, db = ctx.settings, ctx.db
    chars = sum(corpus.allowed_chars(db, settings.languages()).values())
    needed, floor, stall = (
        settings.tokenizer_min_corpus_chars,
        settings.tokenizer_floor_chars,
        settings.tokenizer_stall_sec,
    )
    note = ""
    if chars < needed:
        backlog = corpus.crawl_backlog(db)
        have = "no documents yet" if chars == 0 else f"{chars:,} of {needed:,} characters of allowed text"
        waiting = f"{have}; the tokenizer is trained at {needed:,}"
        if not backlog.exhausted:
            ctx.set_phase(
                "waiting",
                f"{waiting}; still to come: {backlog.queued_urls:,} queued URLs, "
                f"{backlog.staged_pages:,} fetched pages waiting for the text engine",
            )
            return None
        if chars < floor:
            ctx.set_phase(
                "waiting",
                f"{waiting}; nothing is left to crawl and the corpus is under the {floor:,}-character "
                "floor (TOKENIZER_FLOOR_CHARS): add WEB_SEED_URLS or DOC_SEED_URLS, or `aifactory ingest` "
                "files",
            )
            return None
        quiet = backlog.newest_document_age or 0.0
        if stall <= 0 or quiet < stall:
            when = (
                "set TOKENIZER_STALL_SEC to train on what there is"
                if stall <= 0
                else f"if no new text arrives within {max(1, round((stall - quiet) / 60))} min, the "
                f"tokenizer is trained on the {chars:,} characters there are"
            )
            ctx.set_phase("waiting", f"{waiting}; nothing is left to crawl: {when}")
            return None
        note = (
            f"trained on {chars:,} characters, under TOKENIZER_MIN_CORPUS_CHARS={needed:,}: nothing was left "
            f"to crawl and no new text had arrived for {quiet / 60:.0f} min"
        )
        ctx.log(f"the crawl has run out of pages; tokenizer: {note}", level="warning")
    ctx.set_phase("tokenizer", f"training the tokenizer on a sample of {chars:,} characters")
    tokenizer = train_tokenizer(settings, db, 1, ctx.node_id, note=note)
    ctx.log(f"trained {tokenizer.describe()} in {tokenizer.info.train_seconds:.0f}s")
    return tokenizer


def language_check(
    ctx: EngineContext, tokenizer: tokenizers.Tokenizer, memory: dict
) -> tuple[tokenizers.Tokenizer, str]:
    """A warning for each language of TRAIN_LANG_ONLY the tokenizer was trained without, and a proposal
    (or, with TOKENIZER_AUTO_NEW_GENERATION, a new generation) once such a language is
    TOKENIZER_NEW_LANGUAGE_SHARE of the corpus. Measured every LANGUAGE_CHECK_SEC; `memory` keeps the
    last result and what was already logged between passes. Returns the tokenizer in use and the note."""
    settings = ctx.settings
    missing = [code for code in settings.languages() if code not in tokenizer.info.languages]
    if not missing:
        return tokenizer, ""
    key = (tokenizer.generation, tuple(missing))
    if memory.get("key") != key or time.monotonic() - memory.get("at", -math.inf) >= LANGUAGE_CHECK_SEC:
        memory.update(key=key, at=time.monotonic(), chars=corpus.allowed_chars(ctx.db, settings.languages()))
    chars: dict[str, int] = memory["chars"]
    total = max(1, sum(chars.values()))
    share_needed = settings.tokenizer_new_language_share
    ready = [
        code
        for code in missing
        if chars.get(code, 0) / total >= share_needed and chars.get(code, 0) >= NEW_LANGUAGE_MIN_CHARS
    ]
    shares = ", ".join(f"{code} is {chars.get(code, 0) / total:.1%} of the corpus" for code in missing)
    if not ready:
        note = (
            f"warning: tokenizer g{tokenizer.generation} has no {', '.join(missing)} "
            f"(TRAIN_LANG_ONLY={settings.train_lang_only}; {shares}; a new generation is proposed at "
            f"{share_needed:.0%})"
        )
        if memory.get("warned") != key:
            memory["warned"] = key
            ctx.log(note, level="warning")
        return tokenizer, note
    if settings.tokenizer_auto_new_generation:
        generation = tokenizer.generation + 1
        ctx.log(
            f"{shares}, but tokenizer g{tokenizer.generation} was trained without it: training generation "
            f"{generation} (TOKENIZER_AUTO_NEW_GENERATION=1; a new model starts once its dataset is built, "
            "the previous model's checkpoints are kept)",
            level="warning",
        )
        ctx.set_phase("tokenizer", f"training tokenizer generation {generation} ({', '.join(ready)} arrived)")
        new = train_tokenizer(settings, ctx.db, generation, ctx.node_id)
        ctx.log(f"trained {new.describe()} in {new.info.train_seconds:.0f}s")
        return new, ""
    note = (
        f"a new tokenizer generation is proposed: {shares}, but tokenizer g{tokenizer.generation} was "
        "trained without it (run `aifactory tokenizer train --new-generation`, or set "
        "TOKENIZER_AUTO_NEW_GENERATION=1)"
    )
    if memory.get("proposed") != key:
        memory["proposed"] = key
        ctx.log(note, level="warning")
    return tokenizer, note


def step(ctx: EngineContext, memory: dict | None = None) -> None:
    """One pass of the engine (the tests call it directly). `memory` carries what the language check
    remembers between passes (the engine's loop keeps one)."""
    settings, db = ctx.settings, ctx.db
    tokenizer = tokenizers.current(settings.data_dir)
    if tokenizer is None:
        tokenizer = first_tokenizer(ctx)
        if tokenizer is None:
            return
    tokenizer, note = language_check(ctx, tokenizer, {} if memory is None else memory)
    note = f"; {note}" if note else ""
    pending, age = pending_documents(settings, db, tokenizer)
    if pending == 0:
        ctx.set_phase("idle", "the dataset is up to date" + note)
        return
    wait = settings.dataset_build_max_wait_sec
    if pending < settings.dataset_build_min_new_docs and wait > 0 and age < wait:
        ctx.set_phase(
            "waiting",
            f"{pending:,} new documents; building at {settings.dataset_build_min_new_docs:,}" + note,
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
    ctx.set_phase("idle", report.summary() + note)


def run(ctx: EngineContext) -> None:
    memory: dict = {}
    while not ctx.stopping():
        pause = ctx.settings.dataset_poll_sec
        try:
            step(ctx, memory)
        except DatasetError as exc:
            ctx.set_phase("error", str(exc))
            ctx.log(str(exc), level="error")
            pause = max(pause, ERROR_BACKOFF_SEC)
        if ctx.wait(pause):
            return
