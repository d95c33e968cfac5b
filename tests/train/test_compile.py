"""The torch.compile path, on CPU: the compiled step trains like the eager one, accumulation included."""

from __future__ import annotations

import pytest

from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer, accumulation_steps
from tests.train.tiny import corpus_source, tiny_settings


def test_a_compiled_trainer_takes_the_same_steps_as_an_eager_one(make_settings) -> None:
    losses = {}
    for compiled in (False, True):
        settings = tiny_settings(make_settings, enable_torch_compile=compiled, train_grad_accum_steps=2)
        trainer = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), None)
        losses[compiled] = [trainer.train_step().loss for _ in range(3)]
        trainer.loader.close()
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_tokens_per_step_sets_the_accumulation(make_settings) -> None:
    settings = tiny_settings(make_settings, train_tokens_per_step=1000)
    assert accumulation_steps(settings, 256) == 4  # 4 micro-batches of 256 tokens reach 1,000
    assert accumulation_steps(tiny_settings(make_settings), 256) == 1
    assert accumulation_steps(tiny_settings(make_settings), 4096, "cuda") == 64  # auto: 262,144 on CUDA
    trainer = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), None)
    assert trainer.tokens_per_step() >= 1000 and trainer.grad_accum == 4  # 8 x 32 tokens per micro-batch
