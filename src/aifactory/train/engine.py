"""The trainer engine: trains continuously, in cycles, as long as the node asks it to run.

The node runs it in its own process (EngineSpec own_process=True). Between cycles it picks up new data
(`source.refresh()`); after an early stop it waits, phase "paused", until the dataset has grown by
EARLY_STOPPING_RESUME_GROWTH. Its data source comes from `open_source(settings)`, which the dataset
builder provides (`aifactory.dataset.source.open_source`); until there is data, the source raises
SourceUnavailable and the engine waits in phase "waiting" saying why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from aifactory.cluster.context import EngineContext
from aifactory.settings import Settings
from aifactory.train import metrics
from aifactory.train.batches import BatchSource, SourceUnavailable
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.cycle import Evaluation, Hooks, finish, keep_best_of_store, run_cycle_with_recovery, save
from aifactory.train.runtime import Runtime, setup_runtime
from aifactory.train.trainer import StepStats, Trainer
from aifactory.train.writer import CheckpointWriter

SourceFactory = Callable[[Settings], BatchSource]
POLL_SEC = 15.0  # how often a waiting or paused trainer looks for new data
AGREE_TRIES, AGREE_WAIT_SEC = 30, 1.0  # ranks wait this long for each other's dataset version
STATUS_EVERY_SEC = 5.0  # how often the phase detail on the dashboard is refreshed while training


def checkpoint_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints"


def metric_row(trainer: Trainer, stats: StepStats, evaluation: Evaluation | None) -> metrics.MetricRow:
    state = trainer.state
    return metrics.MetricRow(
        step=stats.step,
        epoch=trainer.epoch(),
        tokens_seen=state.tokens_seen,
        train_loss=stats.loss,
        lr=stats.lr,
        tokens_per_sec=stats.tokens_per_sec,
        mfu=stats.mfu,
        val_loss=evaluation.val_loss if evaluation else None,
        val_bpb=evaluation.val_bpb if evaluation else None,
        best_val_loss=state.best_val_loss,
        val_languages=dict(state.val_languages) if evaluation else {},
    )


def status_line(trainer: Trainer, stats: StepStats | None = None) -> str:
    state = trainer.state
    parts = [f"step {state.step:,}", f"epoch {trainer.epoch():.2f}"]
    if state.train_loss is not None:
        parts.append(f"loss {state.train_loss:.4f}")
    if state.val_loss is not None:
        parts.append(f"val {state.val_loss:.4f} ({state.val_bpb:.3f} bpb)")
        if len(state.val_languages) > 1:
            parts.append(
                ", ".join(
                    f"{name} {v['loss']:.4f} ({v['bpb']:.3f} bpb)" for name, v in state.val_languages.items()
                )
            )
    if state.best_val_loss is not None:
        parts.append(f"best {state.best_val_loss:.4f}")
    if stats is not None:
        parts.append(f"{stats.tokens_per_sec:,.0f} tok/s, MFU {stats.mfu:.1%}")
    if trainer.sharing.describe():
        # e.g. "2 CPU threads (auto, 2 cores)" or "yielding to 2 chat requests: 1 thread, nice 10"
        parts.append(trainer.sharing.describe())
    return ", ".join(parts)


def open_when_available(
    ctx: EngineContext, open_source: SourceFactory, poll_sec: float
) -> BatchSource | None:
    """The data source, waiting (phase "waiting") while there is none yet; None if stopped meanwhile."""
    while True:
        try:
            return open_source(ctx.settings)
        except SourceUnavailable as exc:
            ctx.set_phase("waiting", f"no training data yet: {exc}")
        if ctx.wait(poll_sec):
            return None


def start_new_model_for_new_tokenizer(
    ctx: EngineContext, store: CheckpointStore, source: BatchSource
) -> CheckpointStore:
    """A new tokenizer generation (an explicit `aifactory tokenizer train --new-generation`) needs a new
    model: the previous model's checkpoints are kept, renamed after its tokenizer, and training starts
    afresh. Any other reason a checkpoint does not fit stays an error for the person to look at."""
    latest = store.read_meta("latest")
    previous = latest[1].get("tokenizer_hash") if latest is not None else None
    if previous is None or previous == source.tokenizer_hash:
        return store
    kept = store.root.with_name(f"{store.root.name}-{str(previous)[:16]}")
    store.root.rename(kept)
    ctx.log(
        f"new tokenizer generation ({source.tokenizer_hash[:16]}): starting a new model; the previous "
        f"model (tokenizer {str(previous)[:16]}, step {latest[1].get('step')}) is kept in {kept}",
        level="warning",
    )
    return CheckpointStore(store.root, store.keep_snapshots)


def resume_target(trainer: Trainer) -> int:
    growth = trainer.settings.early_stopping_resume_growth
    return math.ceil(trainer.state.paused_at_tokens * (1 + growth))


def run_trainer(ctx: EngineContext, open_source: SourceFactory, poll_sec: float = POLL_SEC) -> None:
    settings = ctx.settings
    runtime = setup_runtime(settings)
    store = CheckpointStore(checkpoint_dir(settings), settings.train_keep_snapshots)
    source = open_when_available(ctx, open_source, poll_sec)
    if source is None:
        return
    store = start_new_model_for_new_tokenizer(ctx, store, source)
    with store.lock():
        # A checkpoint that cannot be loaded (nor its backup) raises here: the engine shows the error.
        checkpoint, problem = store.load_for_resume(map_location=runtime.device)
        if problem:
            ctx.log(problem, level="error")
        trainer = Trainer.create(settings, source, runtime, checkpoint)
        keep_best_of_store(trainer, store)
        if checkpoint is None:
            save(trainer, store, ("latest",))  # step 0: something to roll back to from the first cycle on
        trainer.writer = CheckpointWriter(store)  # from now on saves run off the training path
        origin = f"resuming at step {trainer.state.step:,}" if checkpoint else "new model"
        ctx.log(
            f"training {trainer.config.short()} ({trainer.model.parameter_count():,} parameters, {origin}) "
            f"on {runtime.describe()}; data: {source.describe()}"
        )
        writer = metrics.MetricsWriter(ctx.db, ctx.node_id, settings.train_log_every_sec)
        shown = 0.0

        def on_step(stats: StepStats, evaluation: Evaluation | None) -> None:
            nonlocal shown
            writer.write(metric_row(trainer, stats, evaluation), force=evaluation is not None)
            if time.monotonic() - shown >= STATUS_EVERY_SEC or trainer.sharing.changed_at > shown:
                shown = time.monotonic()
                ctx.set_phase("training", status_line(trainer, stats))

        hooks = Hooks(stop=ctx.stopping, wait=ctx.wait, report=ctx.log, on_step=on_step)
        try:
            train_until_stopped(ctx, trainer, store, source, hooks, poll_sec)
        except BaseException:
            trainer.writer.close()  # what was submitted gets written; nothing new from a failed state
            raise
        try:
            finish(trainer, store, hooks)  # `latest` at Stop, and every save on disk before the lock goes
        finally:
            trainer.writer.close()
        ctx.set_phase("stopping", f"saved at step {trainer.state.step:,}")


def agree_on_version(runtime: Runtime, source: BatchSource, wait: Callable[[float], bool]) -> None:
    """Under torchrun all ranks train on one dataset version: a rank that opened an older one (a build
    committed between the opens) refreshes until they agree. Alone, nothing to agree on."""
    for _ in range(AGREE_TRIES):
        versions = runtime.all_gather_object(source.version)
        if len(set(versions)) == 1:
            return
        wait(AGREE_WAIT_SEC)
        source.refresh()
    raise RuntimeError(f"the ranks do not agree on the dataset version: {versions}")


def train_until_stopped(
    ctx: EngineContext,
    trainer: Trainer,
    store: CheckpointStore,
    source: BatchSource,
    hooks: Hooks,
    poll_sec: float,
) -> None:
    settings = ctx.settings
    while not ctx.stopping():
        if source.refresh():
            ctx.log(f"new training data: {source.describe()} (version {source.version})")
        agree_on_version(trainer.runtime, source, ctx.wait)
        if trainer.state.paused:
            target = resume_target(trainer)
            if source.train_tokens < target:
                ctx.set_phase(
                    "paused",
                    f"early stopping: no validation improvement in {trainer.state.stale_evals} "
                    f"evaluations (best {trainer.state.best_val_loss:.4f} at step "
                    f"{trainer.state.best_val_step}); "
                    f"waiting for {target:,} training tokens (now {source.train_tokens:,})",
                )
                ctx.wait(poll_sec)
                continue
            trainer.state.paused, trainer.state.stale_evals = False, 0
            ctx.log(f"the dataset grew to {source.train_tokens:,} training tokens: training resumes")
        ctx.set_phase("training", status_line(trainer))
        result = run_cycle_with_recovery(trainer, store, hooks, settings.train_steps_per_cycle)
        ctx.count(train_steps=result.steps, train_tokens=result.tokens, train_cycles=1)
        metrics.prune(ctx.db)


def run(ctx: EngineContext) -> None:
    """The engine entry point: train continuously on the token dataset the dataset engine builds."""
    from aifactory.chat.mix import with_chat_mix
    from aifactory.dataset.source import open_source  # the dataset imports sentencepiece and numpy

    # Conversation windows at CHAT_MIX_RATIO, when there are conversations (chat tuning, #18).
    run_trainer(ctx, lambda settings: with_chat_mix(settings, open_source(settings)))
