"""TokenArraySource keeps the BatchSource contract the trainer relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aifactory.train.batches import BatchSource, SourceUnavailable, TokenArraySource, byte_token_bytes


def source(n_train: int = 1000, n_val: int = 200) -> TokenArraySource:
    tokens = np.arange(n_train + n_val) % 256
    return TokenArraySource(
        tokens[:n_train], tokens[n_train:], vocab_size=256, token_bytes=byte_token_bytes(), tokenizer_hash="b"
    )


def test_it_is_a_batch_source() -> None:
    assert isinstance(source(), BatchSource)


def test_equal_generator_states_draw_equal_windows_of_consecutive_tokens() -> None:
    data = source()
    a = data.train_batch(4, 16, torch.Generator().manual_seed(3))
    b = data.train_batch(4, 16, torch.Generator().manual_seed(3))
    c = data.train_batch(4, 16, torch.Generator().manual_seed(4))
    assert a.shape == (4, 17) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal((a[:, 1:] - a[:, :-1]) % 256, torch.ones(4, 16, dtype=torch.int64))


def test_windows_cover_the_whole_training_split_over_time() -> None:
    data, generator = source(n_train=250), torch.Generator().manual_seed(0)
    starts = {int(row[0]) for _ in range(200) for row in data.train_batch(8, 10, generator)}
    assert min(starts) < 5 and max(starts) > 230  # not stuck at the beginning, as the original was


def test_validation_windows_are_fixed_and_held_out() -> None:
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 100, 1000), rng.integers(100, 200, 300)  # distinguishable splits
    data = TokenArraySource(train, val, vocab_size=256, token_bytes=byte_token_bytes(), tokenizer_hash="b")
    first, again = data.val_batches(2, 16, 3), data.val_batches(2, 16, 3)
    assert len(first) == 3 and all(w.shape == (2, 17) for w in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(bool((w >= 100).all()) for w in first)
    generator = torch.Generator().manual_seed(0)
    assert all(bool((data.train_batch(8, 16, generator) < 100).all()) for _ in range(20))


def test_appended_tokens_arrive_at_the_next_refresh_with_a_new_version() -> None:
    data = source()
    version, val_version = data.version, data.val_version
    data.append(np.arange(500))
    assert data.train_tokens == 1000 and data.version == version
    assert data.refresh() is True
    assert data.train_tokens == 1500 and data.version != version and data.val_version == val_version
    assert data.refresh() is False


def test_a_text_file_is_read_as_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("日本語 and English. " * 300)
    data = TokenArraySource.from_text_file(path, val_fraction=0.1)
    assert data.vocab_size == 256 and data.tokenizer_hash == "utf8-bytes"
    assert data.train_tokens == int(len(path.read_bytes()) * 0.9)
    assert "UTF-8 bytes" in data.describe()
    (tmp_path / "tiny.txt").write_text("too short")
    with pytest.raises(SourceUnavailable, match="at least 2048"):
        TokenArraySource.from_text_file(tmp_path / "tiny.txt")
