"""A training cycle, and how a failed one is rolled back and retried.

A cycle is up to TRAIN_STEPS_PER_CYCLE optimizer steps. Every VAL_EVAL_EVERY global steps it evaluates:
an improvement saves the `best` checkpoint; EARLY_STOPPING_PATIENCE evaluations in a row without one
pause training until the dataset has grown (the engine waits for that) instead of overfitting. The
cycle ends by saving `latest`, also when it was asked to stop (within one optimizer step).

`latest` is only written by a cycle that ended well, so a failed cycle rolls back by loading it again:
- NaN/inf loss: retry with half the learning rate (the scale is kept in the checkpoint from then on);
- out of memory: retry with half the micro-batch and twice the accumulation (same tokens per step);
- anything else: retry after TRAIN_RETRY_BACKOFF_SEC, doubling each time;
at most TRAIN_RETRY_MAX times, each one reported, before the error is raised to the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.trainer import NonFiniteLoss, StepStats, Trainer

# Validation losses closer than this (nats/token) to the best are noise, not an improvement.
MIN_IMPROVEMENT = 1e-3


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


def save(trainer: Trainer, store: CheckpointStore | None, pointers: tuple[str, ...]) -> None:
    if store is not None and trainer.runtime.is_main:  # under DDP, rank 0 writes for everyone
        weights, meta, optimizer = trainer.checkpoint_payload()
        store.save(weights, meta, optimizer if "latest" in pointers else None, pointers)


def run_cycle(trainer: Trainer, store: CheckpointStore | None, hooks: Hooks, steps: int) -> CycleResult:
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
        evaluation = None
        if state.step % settings.val_eval_every == 0:
            val_loss, val_bpb = trainer.evaluate()
            evaluation = Evaluation(val_loss, val_bpb, judge_evaluation(trainer, val_loss))
            result.evaluations.append(evaluation)
            if evaluation.verdict != "no improvement":
                save(trainer, store, ("best",))
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
    save(trainer, store, ("latest",))
    return result


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def roll_back(trainer: Trainer, store: CheckpointStore, hooks: Hooks) -> None:
    checkpoint, problem = store.load_for_resume(map_location=trainer.runtime.device)
    if problem:
        hooks.report(problem, level="error")
    if checkpoint is None:
        raise RuntimeError(f"nothing to roll back to: {store.root} has no checkpoint")
    trainer.restore(checkpoint)


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
