"""The loader: the sampler's batches in the sampler's order, drawn ahead, a rank's share, a loss mask."""

from __future__ import annotations

import threading

import pytest
import torch

from aifactory.train.loader import IGNORE_INDEX, Batch, BatchLoader
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.conftest import wait_for
from tests.train.tiny import corpus_source, tiny_settings


def sampler_batches(
    source, count: int, batch_size: int, seed: int = 5
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(batch, generator state after it) as the training loop drew them before the loader existed."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        out.append((source.train_batch(batch_size, 16, generator), generator.get_state()))
    return out


def test_the_loader_yields_the_samplers_batches_in_order_and_moves_the_generator_alike() -> None:
    source = corpus_source()
    expected = sampler_batches(source, 6, 4)
    loader, generator = BatchLoader(source), torch.Generator().manual_seed(5)
    for batch, state in expected:
        assert torch.equal(loader.next(generator, 4, 16).tokens, batch)
        assert torch.equal(generator.get_state(), state)  # what a checkpoint saves: after this batch
    loader.close()


def test_a_reset_redraws_from_the_generators_state() -> None:
    source = corpus_source()
    expected = sampler_batches(source, 4, 4)
    loader, generator = BatchLoader(source), torch.Generator().manual_seed(5)
    for _ in range(3):
        loader.next(generator, 4, 16)
    generator.set_state(expected[0][1])  # a rollback or a rewind at Stop
    loader.reset()
    assert torch.equal(loader.next(generator, 4, 16).tokens, expected[1][0])
    assert torch.equal(loader.next(generator, 4, 16).tokens, expected[2][0])
    loader.close()


def test_each_rank_reads_its_share_of_the_global_batch() -> None:
    source = corpus_source()
    (whole, state), *_ = sampler_batches(source, 1, 8)
    for rank in (0, 1):
        loader, generator = BatchLoader(source, rank=rank, world_size=2), torch.Generator().manual_seed(5)
        assert torch.equal(loader.next(generator, 4, 16).tokens, whole[rank * 4 : (rank + 1) * 4])
        assert torch.equal(generator.get_state(), state)  # every rank's generator moves alike
        loader.close()


class SlowSource:
    """A real source whose draws after the first `ready` wait until `go` is set."""

    def __init__(self, ready: int) -> None:
        self.source, self.ready, self.go, self.calls = corpus_source(), ready, threading.Event(), 0

    def train_batch(self, batch_size, seq_len, generator, rows=None):
        self.calls += 1
        if self.calls > self.ready:
            self.go.wait(60)
        return self.source.train_batch(batch_size, seq_len, generator, rows=rows)


def test_the_step_never_waits_for_data_that_is_ready() -> None:
    source = SlowSource(ready=2)
    loader, generator = BatchLoader(source, prefetch=2), torch.Generator().manual_seed(5)
    first = loader.next(generator, 4, 16)  # starts the thread
    wait_for(lambda: source.calls > 2, what="the loader drawing ahead")  # blocked on the third draw
    second = loader.next(generator, 4, 16)  # ready: returned while the producer is still blocked
    assert not source.go.is_set() and first.tokens.shape == second.tokens.shape == (4, 17)
    source.go.set()
    loader.close()


def test_a_failing_draw_is_raised_on_the_training_thread() -> None:
    class Broken:
        def train_batch(self, batch_size, seq_len, generator, rows=None):
            raise OSError("shard unreadable")

    loader = BatchLoader(Broken())
    with pytest.raises(OSError, match="shard unreadable"):
        loader.next(torch.Generator(), 4, 16)


def test_the_loss_mask_ignores_the_targets_it_masks() -> None:
    tokens = torch.arange(10).view(2, 5)
    mask = torch.tensor([[True, False, True, True], [False, False, False, True]])
    batch = Batch(tokens, mask)
    assert batch.inputs.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]
    assert batch.targets.tolist() == [[1, IGNORE_INDEX, 3, 4], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 9]]


def test_the_trainer_trains_on_the_unmasked_targets_only(make_settings) -> None:
    class MaskedSource:  # what chat tuning's source returns: windows with an assistant-only mask
        def __init__(self, source, keep: float) -> None:
            self.source, self.keep = source, keep

        def __getattr__(self, name):
            return getattr(self.source, name)

        def train_batch(self, batch_size, seq_len, generator, rows=None):
            tokens = self.source.train_batch(batch_size, seq_len, generator, rows=rows)
            mask = torch.zeros(tokens.size(0), seq_len, dtype=torch.bool)
            mask[:, : int(seq_len * self.keep)] = True
            return Batch(tokens, mask)

    settings = tiny_settings(make_settings)
    source = corpus_source()
    trainer = Trainer.create(settings, MaskedSource(source, 0.25), setup_runtime(settings, "cpu"), None)
    B, T = trainer.batch_size, trainer.seq_len
    tokens = source.train_batch(B, T, torch.Generator().manual_seed(settings.train_seed))
    with torch.no_grad():
        per_token = trainer.model(tokens[:, :-1], tokens[:, 1:], reduction="none")
    loss = trainer.train_step().loss
    trainer.loader.close()
    assert loss == pytest.approx(float(per_token[:, : T // 4].mean()), rel=1e-4)  # only the kept quarter
    assert loss != pytest.approx(float(per_token.mean()), rel=1e-4)
