"""Training cycles: evaluation bookkeeping, early stopping, and rollback-and-retry after failures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.cycle import Hooks, run_cycle, run_cycle_with_recovery, save
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.train.tiny import corpus_source, tiny_settings


class FlakySource:
    """A real source whose train_batch raises `error` on the given call numbers (1-based)."""

    def __init__(self, source, error: BaseException, on_calls: set[int]) -> None:
        self.source, self.error, self.on_calls, self.calls = source, error, on_calls, 0

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def train_batch(self, batch_size, seq_len, generator, rows=None):
        self.calls += 1
        if self.calls in self.on_calls:
            raise self.error
        return self.source.train_batch(batch_size, seq_len, generator, rows=rows)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.waits: list[float] = []

    def report(self, message: str, level: str = "info") -> None:
        self.messages.append((level, message))

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False

    def hooks(self) -> Hooks:
        return Hooks(report=self.report, wait=self.wait)


def started(make_settings, tmp_path: Path, source=None, **overrides) -> tuple[Trainer, CheckpointStore]:
    """A trainer with its step-0 checkpoint saved, as the engine starts one."""
    if isinstance(source, FlakySource):  # its failures count calls: no draws ahead that are dropped
        overrides.setdefault("train_prefetch_batches", 0)
    settings = tiny_settings(make_settings, **overrides)
    trainer = Trainer.create(settings, source or corpus_source(), setup_runtime(settings, "cpu"), None)
    store = CheckpointStore(tmp_path / "checkpoints")
    save(trainer, store, ("latest",))
    return trainer, store


def test_a_cycle_evaluates_saves_best_and_ends_with_latest(make_settings, tmp_path: Path) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=5)
    result = run_cycle(trainer, store, Hooks(), 10)
    assert (result.steps, result.stopped, result.paused) == (10, False, False)
    assert [e.verdict for e in result.evaluations] == ["first", "improved"]
    assert store.load("latest").meta["step"] == 10
    best = store.load("best", optimizer=False)
    assert best.meta["step"] == 10 and best.meta["state"]["best_val_loss"] == result.evaluations[-1].val_loss


def test_stop_ends_the_cycle_within_one_step_and_saves(make_settings, tmp_path: Path) -> None:
    trainer, store = started(make_settings, tmp_path)
    steps_taken = []
    hooks = Hooks(stop=lambda: len(steps_taken) >= 3, on_step=lambda stats, e: steps_taken.append(stats.step))
    result = run_cycle(trainer, store, hooks, 50)
    assert result.stopped and result.steps == 3
    assert store.load("latest").meta["step"] == 3


def test_early_stopping_pauses_after_patience_evaluations_without_improvement(
    make_settings, tmp_path
) -> None:
    # A learning rate this small cannot move the validation loss by the 0.001 that counts as progress.
    trainer, store = started(
        make_settings, tmp_path, train_lr=1e-9, val_eval_every=2, early_stopping_patience=3
    )
    recorder = Recorder()
    result = run_cycle(trainer, store, recorder.hooks(), 50)
    assert result.paused and result.steps == 8  # evaluations at 2 (first), 4, 6, 8 (three without)
    assert [e.verdict for e in result.evaluations] == ["first"] + ["no improvement"] * 3
    assert trainer.state.paused and trainer.state.paused_at_tokens == trainer.source.train_tokens
    assert store.load("latest").meta["state"]["paused"] is True  # a restart stays paused
    assert any(level == "warning" and "early stopping at step 8" in m for level, m in recorder.messages)


def test_an_injected_failure_rolls_back_to_latest_and_retries(make_settings, tmp_path: Path) -> None:
    source = FlakySource(corpus_source(), RuntimeError("disk went away"), on_calls={7})
    trainer, store = started(make_settings, tmp_path, source, train_retry_backoff_sec=1.5)
    run_cycle(trainer, store, Hooks(), 5)  # steps 1-5 and a latest checkpoint at 5
    recorder = Recorder()
    result = run_cycle_with_recovery(trainer, store, recorder.hooks(), 5)  # fails at step 7
    assert result.steps == 5 and trainer.state.step == 10
    assert recorder.waits == [1.5]
    assert any("disk went away" in m and "rolled back to step 5" in m for _, m in recorder.messages)
    # The retried cycle drew the same batches as an undisturbed run: the rollback restored the sampler.
    reference, reference_store = started(make_settings, tmp_path / "reference")
    run_cycle(reference, reference_store, Hooks(), 10)
    for (name, a), b in zip(
        trainer.model.state_dict().items(), reference.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_nan_loss_rolls_back_and_retries_with_a_lower_learning_rate(make_settings, tmp_path: Path) -> None:
    trainer, store = started(make_settings, tmp_path)
    run_cycle(trainer, store, Hooks(), 5)
    with torch.no_grad():  # the run diverged after the checkpoint
        trainer.model.layers[0].mlp.down.weight.fill_(math.inf)
    recorder = Recorder()
    result = run_cycle_with_recovery(trainer, store, recorder.hooks(), 5)
    assert result.steps == 5 and math.isfinite(result.last.loss)
    assert trainer.state.lr_scale == 0.5 and result.last.lr == pytest.approx(0.5 * 3e-3)
    assert any("loss nan" in m and "learning rate lowered" in m for _, m in recorder.messages)
    assert store.load("latest").meta["state"]["lr_scale"] == 0.5


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_tokens_per_step(make_settings, tmp_path) -> None:
    source = FlakySource(corpus_source(), torch.OutOfMemoryError("CUDA out of memory"), on_calls={2})
    trainer, store = started(make_settings, tmp_path, source)
    tokens = trainer.tokens_per_step()
    recorder = Recorder()
    result = run_cycle_with_recovery(trainer, store, recorder.hooks(), 4)
    assert result.steps == 4 and (trainer.batch_size, trainer.grad_accum) == (4, 2)
    assert trainer.tokens_per_step() == tokens
    assert any("out of memory" in m and "micro-batch 4 x 2" in m for _, m in recorder.messages)


def test_after_train_retry_max_retries_the_failure_is_raised_and_reported(make_settings, tmp_path) -> None:
    source = FlakySource(corpus_source(), RuntimeError("always broken"), on_calls=set(range(1, 100)))
    trainer, store = started(make_settings, tmp_path, source, train_retry_max=2, train_retry_backoff_sec=1)
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="always broken"):
        run_cycle_with_recovery(trainer, store, recorder.hooks(), 5)
    assert recorder.waits == [1, 2]  # backoff doubles
    assert recorder.messages[-1][0] == "error" and "failed 3 times" in recorder.messages[-1][1]
    assert store.load("latest").meta["step"] == 0  # nothing half-done was saved
