"""Resume equivalence: N steps, save, a new process state resumes, N more = 2N steps in one go."""

from __future__ import annotations

from pathlib import Path

import torch

from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.cycle import Hooks, run_cycle
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.train.tiny import corpus_source, tiny_settings


def train(settings, store: CheckpointStore, steps: int) -> list[float]:
    """A fresh Trainer (as a restarted process would build it) from the store's latest, `steps` steps."""
    checkpoint, problem = store.load_for_resume()
    assert problem == ""
    trainer = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), checkpoint)
    losses: list[float] = []
    hooks = Hooks(on_step=lambda stats, evaluation: losses.append(stats.loss))
    run_cycle(trainer, store, hooks, steps)
    return losses


def test_n_steps_save_resume_n_steps_equals_2n_steps(make_settings, tmp_path: Path) -> None:
    # Warmup that ends mid-way and the cosine schedule: the schedule must continue, not restart.
    settings = tiny_settings(
        make_settings,
        train_grad_accum_steps=2,
        train_warmup_steps=8,
        train_lr_schedule="cosine",
        train_total_steps=30,
        val_eval_every=4,
    )
    interrupted = CheckpointStore(tmp_path / "interrupted")
    first = train(settings, interrupted, 12)
    second = train(settings, interrupted, 12)
    straight = CheckpointStore(tmp_path / "straight")
    uninterrupted = train(settings, straight, 24)
    assert len(first + second) == len(uninterrupted) == 24
    assert torch.allclose(torch.tensor(first + second), torch.tensor(uninterrupted), rtol=0, atol=1e-6)
    a, b = interrupted.load("latest"), straight.load("latest")
    assert a.meta["state"] == b.meta["state"] and a.meta["sampler_state"] == b.meta["sampler_state"]
    assert all(torch.allclose(a.weights[name], b.weights[name], atol=1e-6) for name in a.weights)
