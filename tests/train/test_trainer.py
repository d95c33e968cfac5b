"""One optimizer step and one evaluation: the trainer learns, measures honestly, and fails loudly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aifactory.train.batches import TokenArraySource
from aifactory.train.checkpoint import Checkpoint, CheckpointError
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import NonFiniteLoss, Trainer
from tests.train.tiny import corpus_source, tiny_settings


def make_trainer(make_settings, source=None, **overrides) -> Trainer:
    settings = tiny_settings(make_settings, **overrides)
    return Trainer.create(settings, source or corpus_source(), setup_runtime(settings, "cpu"), None)


def test_loss_falls_on_a_tiny_corpus_within_60_steps(make_settings) -> None:
    trainer = make_trainer(make_settings)
    first_val, _ = trainer.evaluate()
    losses = [trainer.train_step().loss for _ in range(60)]
    val_loss, val_bpb = trainer.evaluate()
    assert first_val > math.log(256) - 0.3  # an untrained model is close to uniform over 256 bytes
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 1.5
    assert val_loss < first_val - 1.5
    # One token per byte: bits per byte is the loss in bits.
    assert val_bpb == pytest.approx(val_loss / math.log(2), rel=1e-6)


def test_bits_per_byte_counts_text_bytes_and_skips_special_tokens(make_settings) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, 4000)
    token_bytes = torch.full((50,), 3, dtype=torch.int64)
    token_bytes[0] = 0  # a special token: neither its loss nor bytes count towards bpb
    source = TokenArraySource(
        tokens[:3000], tokens[3000:], vocab_size=50, token_bytes=token_bytes, tokenizer_hash="t"
    )
    trainer = make_trainer(make_settings, source)
    val_loss, val_bpb = trainer.evaluate()
    windows = source.val_batches(trainer.val_windows, trainer.seq_len, 1)
    nats = bytes_ = 0.0
    with torch.no_grad():
        for window in windows:
            losses = trainer.model(window[:, :-1], window[:, 1:], reduction="none")
            text = window[:, 1:] != 0
            nats += float(losses[text].sum())
            bytes_ += 3 * int(text.sum())
    assert val_bpb == pytest.approx(nats / math.log(2) / bytes_, rel=1e-5)
    assert val_loss == pytest.approx(float(trainer.state.val_loss))


def test_no_weight_decay_on_norms_and_embeddings(make_settings) -> None:
    trainer = make_trainer(make_settings, train_tie_embeddings=False)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decayed, plain = ({names[id(p)] for p in g["params"]} for g in trainer.optimizer.param_groups)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert trainer.optimizer.param_groups[1]["weight_decay"] == 0.0
    assert "embed.weight" in plain and all(n in plain for n in names.values() if "norm" in n)
    assert "lm_head.weight" in decayed and "layers.0.attn.qkv.weight" in decayed


def test_gradient_accumulation_gives_the_step_of_the_whole_batch(make_settings) -> None:
    whole = make_trainer(make_settings, train_batch_size=8, train_grad_accum_steps=1)
    halves = make_trainer(make_settings, train_batch_size=4, train_grad_accum_steps=2)
    for _ in range(3):
        a, b = whole.train_step(), halves.train_step()
        # Same windows (the halves draw the first four, then the next four), same mean loss.
        assert a.tokens == b.tokens
    for (name, p), q in zip(whole.model.named_parameters(), halves.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


def test_stopping_between_micro_batches_leaves_the_step_undone(make_settings) -> None:
    trainer = make_trainer(make_settings, train_grad_accum_steps=3)
    trainer.train_step()
    before = {n: p.clone() for n, p in trainer.model.state_dict().items()}
    sampler = trainer.generator.get_state()
    calls = iter([False, False, True])
    assert trainer.train_step(stop=lambda: next(calls)) is None
    assert trainer.state.step == 1
    assert torch.equal(trainer.generator.get_state(), sampler)  # the batches will be drawn again
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.state_dict().items())
    assert all(p.grad is None for p in trainer.model.parameters())


def test_a_nan_loss_raises_before_the_optimizer_step(make_settings) -> None:
    trainer = make_trainer(make_settings)
    trainer.train_step()
    with torch.no_grad():
        trainer.model.embed.weight[:] = math.nan
    moments = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    with pytest.raises(NonFiniteLoss, match="step 2: loss nan"):
        trainer.train_step()
    assert trainer.state.step == 1
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["exp_avg"], moments)


def test_a_checkpoint_of_another_tokenizer_is_refused(make_settings, tmp_path) -> None:
    trainer = make_trainer(make_settings)
    weights, meta, optimizer = trainer.checkpoint_payload()
    meta["tokenizer_hash"] = "sentencepiece-abc"
    checkpoint = Checkpoint(tmp_path / "step-1", meta, weights, optimizer)
    with pytest.raises(CheckpointError, match="tokenizer sentencepiece-abc"):
        Trainer.create(trainer.settings, corpus_source(), trainer.runtime, checkpoint)


def test_explicit_shape_settings_that_contradict_the_checkpoint_are_refused(make_settings, tmp_path) -> None:
    trainer = make_trainer(make_settings)
    weights, meta, optimizer = trainer.checkpoint_payload()
    checkpoint = Checkpoint(tmp_path / "step-0", meta, weights, optimizer)
    wider = tiny_settings(make_settings, train_n_embd=64)
    with pytest.raises(CheckpointError, match="ask for 2L 4H/2kv 64d"):
        Trainer.create(wider, corpus_source(), trainer.runtime, checkpoint)
