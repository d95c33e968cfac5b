"""A training cycle, and how a failed one is rolled back and retried.

A cycle is up to TRAIN_STEPS_PER_CYCLE optimizer steps. Every VAL_EVAL_EVERY_MIN minutes (or, with
that 0, every VAL_EVAL_EVERY global steps) it evaluates: an improvement saves the `best` checkpoint;
EARLY_STOPPING_PATIENCE evaluations in a row without one pause training until the dataset has grown
(the engine waits for that) instead of overfitting. A cycle ends by saving `latest` when
TRAIN_CHECKPOINT_EVERY_MIN minutes have passed since the last save (0: every cycle), and always when
it was asked to stop (within one optimizer step) or paused. With a background writer (writer.py) the
saves happen off the training path; a save that fails for lack of space is reported and tried again
RETRY_SAVE_SEC later, while training goes on.

`best` only ever improves: a rollback keeps the best validation loss seen, not the one `latest` had.

`latest` is only written by a cycle that ended well, so a failed cycle rolls back by loading it again:
- NaN/inf loss: retry with half the learning rate; after TRAIN_LR_RECOVER_STEPS stable steps the
  rate is doubled back, step by step, up to the schedule's own;
- out of memory: retry with half the micro-batch and twice the accumulation (same tokens per step);
- anything else: retry after TRAIN_RETRY_BACKOFF_SEC, doubling each time;
at most TRAIN_RETRY_MAX times, each one reported, before the error is raised to the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aifactory.train.checkpoint import CheckpointDiskFull, CheckpointError, CheckpointStore
from aifactory.train.trainer import NonFiniteLoss, StepStats, Trainer, TrainState
from aifactory.train.writer import Snapshot

# Validation losses closer than this (nats/token) to the best are noise, not an improvement.
MIN_IMPROVEMENT = 1e-3
RETRY_SAVE_SEC = 60.0  # a save that failed (disk full) is tried again this much later


@dataclass
class Evaluation:
    val_loss: float
    val_bpb: float
    verdict: str  # first, improved, new validation set, no improvement


@dataclass
class CycleResult:
    steps: int = 0
    tokens: int = 0
    stopped: bool = False  # asked to stop
    paused: bool = False  # early stopping fired
    last: StepStats | None = None
    evaluations: list[Evaluation] = field(default_factory=list)


@dataclass
class Hooks:
    """How a cycle talks to whoever runs it (the engine, the CLI, a test)."""

    stop: Callable[[], bool] = lambda: False
    wait: Callable[[float], bool] = lambda seconds: False  # sleeps; True = stop requested meanwhile
    report: Callable[..., None] = lambda message, level="info": None  # (message, level=)
    on_step: Callable[[StepStats, Evaluation | None], None] = lambda stats, evaluation: None


def judge_evaluation(trainer: Trainer, val_loss: float) -> str:
    """Update best/stale bookkeeping for a new validation loss; returns the verdict."""
    state, key = trainer.state, trainer.val_key()
    if state.best_val_loss is None or state.val_key != key:
        # Losses on different validation windows are not comparable: start the comparison afresh.
        verdict = "first" if state.best_val_loss is None else "new validation set"
    elif val_loss < state.best_val_loss - MIN_IMPROVEMENT:
        verdict = "improved"
    else:
        state.stale_evals += 1
        return "no improvement"
    state.best_val_loss, state.best_val_step, state.val_key, state.stale_evals = val_loss, state.step, key, 0
    return verdict


def keep_best(state: TrainState, best: tuple[float | None, int | None, str]) -> None:
    """After a rollback or a resume: keep `best` (loss, step, validation key) if it beats the state's."""
    loss, step, key = best
    if loss is None:
        return
    if state.best_val_loss is None or (state.val_key == key and loss < state.best_val_loss):
        state.best_val_loss, state.best_val_step, state.val_key = loss, step, key


def keep_best_of_store(trainer: Trainer, store: CheckpointStore) -> None:
    """At start: `best` may be newer than `latest` (saved, then killed before the next latest): keep
    its validation loss, so the next evaluation is compared with it, not with an older one."""
    if not trainer.runtime.is_main:
        return
    try:
        entry = store.read_meta("best")
    except (CheckpointError, FileNotFoundError):
        return
    if entry is not None:
        saved = TrainState.from_dict(entry[1].get("state", {}))
        keep_best(trainer.state, best_of(saved))


def best_of(state: TrainState) -> tuple[float | None, int | None, str]:
    return state.best_val_loss, state.best_val_step, state.val_key


def save(
    trainer: Trainer,
    store: CheckpointStore | None,
    pointers: tuple[str, ...],
    report: Callable[..., None] | None = None,
) -> bool:
    """Save `pointers` now: through the trainer's background writer if it has one, else here. False
    when the disk is full (reported; the caller keeps training and tries again later)."""
    if store is None or not trainer.runtime.is_main:  # under DDP, rank 0 writes for everyone
        return True
    weights, meta, optimizer = trainer.checkpoint_payload()
    optimizer = optimizer if "latest" in pointers else None
    if "latest" in pointers:
        trainer.saved_at, trainer.saved_step = time.monotonic(), trainer.state.step
    if trainer.writer is not None:
        trainer.writer.submit(Snapshot.take(weights, meta, optimizer, pointers))
        return True
    try:
        store.save(weights, meta, optimizer, pointers)
    except CheckpointDiskFull as exc:
        saving_failed(trainer, exc, pointers, report)
        return False
    return True


def saving_failed(
    trainer: Trainer, exc: Exception, pointers: tuple[str, ...], report: Callable[..., None] | None
) -> None:
    if "latest" in pointers:
        # Try again in RETRY_SAVE_SEC, not only at the next regular save; and `latest` is behind again,
        # so that Stop (finish) saves it even when no step came after the failed save.
        every = trainer.settings.train_checkpoint_every_min * 60
        trainer.saved_at = time.monotonic() - max(0.0, every - RETRY_SAVE_SEC)
        trainer.saved_step = -1
    if report is not None:
        report(
            f"checkpoint ({', '.join(pointers)}) at step {trainer.state.step} not saved: {exc}; training "
            f"continues and the save is tried again in {RETRY_SAVE_SEC:g}s",
            level="error",
        )


def report_writer_failures(trainer: Trainer, hooks: Hooks) -> None:
    """Report what the background writer failed to save (on the training thread)."""
    if trainer.writer is not None:
        for pointers, failure in trainer.writer.failures():
            saving_failed(trainer, failure, pointers, hooks.report)


def finish(trainer: Trainer, store: CheckpointStore | None, hooks: Hooks) -> None:
    """At the end of training (Stop, or the steps asked for): `latest` saved if it is behind, and
    every save written before returning."""
    for _ in range(2):  # a second try when the first one failed (space freed meanwhile, a hiccup)
        if trainer.saved_step != trainer.state.step:
            save(trainer, store, ("latest",), hooks.report)
        if trainer.writer is not None:
            trainer.writer.flush()
            report_writer_failures(trainer, hooks)
        if trainer.saved_step == trainer.state.step:
            return


def checkpoint_due(trainer: Trainer) -> bool:
    every = trainer.settings.train_checkpoint_every_min * 60
    return every == 0 or time.monotonic() - trainer.saved_at >= every


def evaluation_due(trainer: Trainer) -> bool:
    """On the clock; by step count when VAL_EVAL_EVERY_MIN is 0, and under DDP, where all ranks must
    evaluate at the same step without a collective (a host sync) on every step to agree on the time."""
    settings = trainer.settings
    if settings.val_eval_every_min == 0 or trainer.runtime.distributed:
        return trainer.state.step % settings.val_eval_every == 0
    return time.monotonic() - trainer.evaluated_at >= settings.val_eval_every_min * 60


def recover_learning_rate(trainer: Trainer, hooks: Hooks) -> None:
    """Double a rate lowered after a NaN back up once it has been stable for TRAIN_LR_RECOVER_STEPS."""
    state = trainer.state
    if state.lr_scale >= 1.0:
        return
    state.stable_steps += 1
    if state.stable_steps >= trainer.settings.train_lr_recover_steps:
        state.lr_scale, state.stable_steps = min(1.0, state.lr_scale * 2), 0
        hooks.report(
            f"step {state.step}: stable for {trainer.settings.train_lr_recover_steps} steps since the "
            f"learning rate was lowered; raised back to {trainer.current_lr():.3g} (x{state.lr_scale:g})"
        )


def run_cycle(trainer: Trainer, store: CheckpointStore | None, hooks: Hooks, steps: int) -> CycleResult:
    try:
        return _run_cycle(trainer, store, hooks, steps)
    finally:
        # Between cycles the source may change (refresh) and a failed cycle is rolled back: nothing
        # drawn ahead survives a cycle.
        trainer.loader.reset()


def _run_cycle(trainer: Trainer, store: CheckpointStore | None, hooks: Hooks, steps: int) -> CycleResult:
    settings, state = trainer.settings, trainer.state
    result = CycleResult()
    for _ in range(steps):
        if hooks.stop():
            result.stopped = True
            break
        stats = trainer.train_step(stop=hooks.stop)
        if stats is None:
            result.stopped = True
            break
        result.steps, result.tokens, result.last = result.steps + 1, result.tokens + stats.tokens, stats
        recover_learning_rate(trainer, hooks)
        evaluation = None
        if evaluation_due(trainer):
            val_loss, val_bpb = trainer.evaluate()
            trainer.evaluated_at = time.monotonic()
            evaluation = Evaluation(val_loss, val_bpb, judge_evaluation(trainer, val_loss))
            result.evaluations.append(evaluation)
            if evaluation.verdict != "no improvement":
                save(trainer, store, ("best",), hooks.report)
        report_writer_failures(trainer, hooks)
        hooks.on_step(stats, evaluation)
        if state.stale_evals >= settings.early_stopping_patience:
            state.paused, state.paused_at_tokens = True, trainer.source.train_tokens
            result.paused = True
            hooks.report(
                f"early stopping at step {state.step}: no validation improvement in "
                f"{state.stale_evals} evaluations (best {state.best_val_loss:.4f} at step "
                f"{state.best_val_step}); training pauses until the dataset grows by "
                f"{settings.early_stopping_resume_growth:.0%}",
                level="warning",
            )
            break
    if result.stopped or result.paused or checkpoint_due(trainer):
        save(trainer, store, ("latest",), hooks.report)
    return result


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def roll_back(trainer: Trainer, store: CheckpointStore, hooks: Hooks) -> None:
    if trainer.writer is not None:
        trainer.writer.flush()  # what was submitted is on disk before `latest` is read back
        report_writer_failures(trainer, hooks)
    best = best_of(trainer.state)
    checkpoint, problem = store.load_for_resume(map_location=trainer.runtime.device)
    if problem:
        hooks.report(problem, level="error")
    if checkpoint is None:
        raise RuntimeError(f"nothing to roll back to: {store.root} has no checkpoint")
    trainer.restore(checkpoint)
    keep_best(trainer.state, best)  # `best` never gets worse because `latest` is older than it


def run_cycle_with_recovery(
    trainer: Trainer, store: CheckpointStore, hooks: Hooks, steps: int
) -> CycleResult:
    """run_cycle, rolled back to `latest` and retried on failure (see the module docstring)."""
    settings = trainer.settings
    failures = 0
    while True:
        try:
            return run_cycle(trainer, store, hooks, steps)
        except Exception as exc:
            failure = exc
        failures += 1
        if trainer.runtime.distributed or failures > settings.train_retry_max:
            # Under DDP one rank cannot roll back alone; torchrun ends the run and it resumes from latest.
            hooks.report(
                f"training cycle failed{f' {failures} times' if failures > 1 else ''}: "
                f"{type(failure).__name__}: {failure}",
                level="error",
            )
            raise failure
        lr_scale = trainer.state.lr_scale
        if trainer.runtime.device.type == "cuda":
            torch.cuda.empty_cache()
        roll_back(trainer, store, hooks)
        step, retry = trainer.state.step, f"retry {failures}/{settings.train_retry_max}"
        if isinstance(failure, NonFiniteLoss):
            trainer.state.lr_scale = min(lr_scale, trainer.state.lr_scale) / 2
            trainer.state.stable_steps = 0
            hooks.report(
                f"{failure}: rolled back to step {step}; {retry} with the learning rate lowered to "
                f"{trainer.current_lr():.3g} (x{trainer.state.lr_scale:g})",
                level="warning",
            )
        elif is_out_of_memory(failure) and trainer.shrink_batch():
            hooks.report(
                f"out of memory: rolled back to step {step}; {retry} with micro-batch "
                f"{trainer.batch_size} x {trainer.grad_accum} accumulation steps (auto-tune lowers the "
                "batch size, same tokens per step)",
                level="warning",
            )
        else:
            delay = settings.train_retry_backoff_sec * 2 ** (failures - 1)
            hooks.report(
                f"training cycle failed ({type(failure).__name__}: {failure}); rolled back to step {step}; "
                f"{retry} in {delay:g}s",
                level="warning",
            )
            if hooks.wait(delay):
                return CycleResult(stopped=True)
