"""A tiny model, a small corpus and the settings that go with them, so training tests take seconds."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from aifactory.settings import Settings
from aifactory.train.batches import TokenArraySource, byte_token_bytes

TEXT = "the model reads text from the web and learns to predict the next byte of every page it sees"
WORDS = TEXT.split()

# 2 layers, width 32, 4 heads (2 key/value heads), byte vocabulary, 8 x 32-token batches.
TINY: dict[str, Any] = dict(
    model_size="tiny",
    train_n_layer=2,
    train_n_head=4,
    train_n_kv_head=2,
    train_n_embd=32,
    train_batch_size=8,
    train_seq_len=32,
    train_lr=3e-3,
    train_warmup_steps=5,
    train_steps_per_cycle=10,
    val_eval_every=5,
    val_eval_tokens=512,
    val_eval_every_min=0,
    train_checkpoint_every_min=0,
    pytorch_cpu_threads=1,
    train_log_every_sec=0,
    train_retry_backoff_sec=0,
)


def tiny_settings(make_settings: Any, **overrides: Any) -> Settings:
    return make_settings(**{**TINY, **overrides})


def corpus_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def corpus_source(words: int = 6000, seed: int = 0) -> TokenArraySource:
    data = np.frombuffer(corpus_text(words, seed).encode(), dtype=np.uint8)
    split = int(len(data) * 0.9)
    return TokenArraySource(
        data[:split],
        data[split:],
        vocab_size=256,
        token_bytes=byte_token_bytes(),
        tokenizer_hash="utf8-bytes",
    )


def more_text(words: int, seed: int) -> np.ndarray:
    return np.frombuffer(corpus_text(words, seed).encode(), dtype=np.uint8).astype(np.int64)
