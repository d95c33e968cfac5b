"""The network's own contracts: KV-cache decoding, shapes and presets, and choosing a shape to resume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from aifactory.model.config import (
    PRESETS,
    ModelConfig,
    ModelConfigError,
    from_settings,
    preset,
    reconcile,
    swiglu_hidden,
)
from aifactory.model.llama import KVCache, Transformer
from aifactory.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "model.md"


def small(**overrides: object) -> ModelConfig:
    values = dict(
        vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=96, max_seq_len=32
    )
    return ModelConfig(**{**values, **overrides})


@pytest.mark.parametrize("chunks", [[1] * 24, [7, 1, 1, 15], [24]], ids=["token by token", "mixed", "one"])
def test_cached_incremental_decoding_equals_a_full_forward(chunks: list[int]) -> None:
    torch.manual_seed(0)
    model = Transformer(small()).eval()
    idx = torch.randint(0, 97, (2, sum(chunks)))
    cache = KVCache(model.config, batch_size=2, max_len=32)
    with torch.no_grad():
        full = model(idx)
        pieces, start = [], 0
        for size in chunks:
            pieces.append(model(idx[:, start : start + size], cache=cache))
            start += size
    assert cache.length == idx.size(1)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_kv_cache_refuses_to_overflow() -> None:
    model = Transformer(small()).eval()
    cache = KVCache(model.config, batch_size=1, max_len=8)
    with torch.no_grad(), pytest.raises(ValueError, match="holds 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long), cache=cache)


def test_sequences_longer_than_trained_for_extend_the_rotary_tables() -> None:
    model = Transformer(small(max_seq_len=16)).eval()
    idx = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        logits = model(idx)
        cache = KVCache(model.config, batch_size=1, max_len=40)
        stepwise = torch.cat([model(idx[:, :30], cache=cache), model(idx[:, 30:], cache=cache)], dim=1)
    assert logits.shape == (1, 40, 97) and torch.allclose(stepwise, logits, atol=1e-5)


def test_loss_ignores_targets_of_minus_one() -> None:
    torch.manual_seed(0)
    model = Transformer(small())
    idx = torch.randint(0, 97, (2, 10))
    targets = idx.clone()
    targets[:, :5] = -1
    full = model(idx[:, :], targets)
    per_token = model(idx, idx, reduction="none")
    assert torch.allclose(full, per_token[:, 5:].mean(), atol=1e-6)


@pytest.mark.parametrize("size", list(PRESETS))
def test_presets_have_the_parameters_their_config_reports(size: str) -> None:
    config = preset(size, vocab_size=8000)
    with torch.device("meta"):  # shapes only: no memory for the larger presets
        model = Transformer(config)
    assert model.parameter_count() == config.parameter_count()
    assert config.head_dim == 64 and config.intermediate_size == swiglu_hidden(config.n_embd)


def test_docs_list_each_presets_parameter_count() -> None:
    text = DOCS.read_text()
    vocab = Settings.model_fields["train_vocab_size"].default
    assert f"vocabulary {vocab} (the `TRAIN_VOCAB_SIZE` default" in " ".join(text.split())
    for size in PRESETS:
        count = preset(size, vocab_size=vocab).parameter_count()
        assert re.search(rf"\| `{size}` \|.*\| {count:,} \|", text), (
            f"docs/model.md: {size} should say {count:,}"
        )


def test_untied_embeddings_add_an_output_matrix() -> None:
    tied, untied = Transformer(small()), Transformer(small(tie_embeddings=False))
    assert "lm_head.weight" not in tied.state_dict()
    assert untied.parameter_count() - tied.parameter_count() == 97 * 64


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_embd=66), "not a multiple of the 4 heads"),
        (dict(n_head=4, n_kv_head=3), "not a multiple of 3 key/value heads"),
        (dict(n_embd=12, n_head=4, n_kv_head=4), "must be even"),
    ],
)
def test_impossible_shapes_are_refused_with_the_reason(bad: dict, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        small(**bad)


def test_settings_override_the_preset(make_settings) -> None:
    settings = make_settings(
        model_size="tiny", train_n_layer=3, train_n_kv_head=2, train_tie_embeddings=False
    )
    config = from_settings(settings, "tiny", vocab_size=500, seq_len=128)
    assert (config.n_layer, config.n_head, config.n_kv_head, config.n_embd) == (3, 4, 2, 256)
    assert config.vocab_size == 500 and config.max_seq_len == 128 and not config.tie_embeddings


def test_resuming_keeps_the_checkpoints_shape_unless_settings_say_otherwise() -> None:
    saved, wanted = small(n_layer=2), small(n_layer=4, max_seq_len=64)
    kept = reconcile(wanted, saved, explicit=[])
    assert kept.n_layer == 2 and kept.max_seq_len == 64  # auto settings: the checkpoint's shape
    with pytest.raises(ModelConfigError, match="TRAIN_N_LAYER"):
        reconcile(wanted, saved, explicit=["TRAIN_N_LAYER"])
    with pytest.raises(ModelConfigError, match="new tokenizer needs a new model"):
        reconcile(small(vocab_size=300), saved, explicit=[])
