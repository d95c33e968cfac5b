"""A tiny bilingual tokenizer and tiny checkpoints in a data directory, as the trainer would leave them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from aifactory.dataset import tokenizer as tokenizers
from aifactory.model.config import ModelConfig
from aifactory.model.llama import Transformer
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from tests.text.pages import DOCS_EN, FORUM_EN, NEWS_EN, NEWS_JA, WIKI_EN, WIKI_JA

TEXTS = NEWS_EN + NEWS_JA + DOCS_EN + FORUM_EN + WIKI_EN + WIKI_JA
JAPANESE = set(NEWS_JA + WIKI_JA)

# Settings for a serving test: small batches and queue, a short poll for hot switching.
SERVE: dict[str, Any] = dict(
    serve_max_batch=4,
    serve_queue_size=12,
    serve_threads=1,
    serve_model_poll_sec=0.2,
    max_generate_tokens=64,
    rag_index_poll_sec=0.2,
)


def make_tokenizer(data_dir: Path, generation: int = 1) -> tokenizers.Tokenizer:
    existing = tokenizers.generations(data_dir)
    if generation in existing:
        return tokenizers.load(data_dir, generation)
    texts = [("ja" if text in JAPANESE else "en", text) for text in TEXTS]
    return tokenizers.train(data_dir, generation, texts * 3, vocab_size=1000, model_type="bpe", threads=1)


def tiny_config(vocab_size: int, **overrides: Any) -> ModelConfig:
    values = dict(
        vocab_size=vocab_size,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        intermediate_size=128,
        max_seq_len=256,
        # Untied: a random model with tied embeddings mostly repeats its last token (its logit is the
        # embedding's square norm); untied, its greedy output depends on the whole context.
        tie_embeddings=False,
    )
    return ModelConfig(**{**values, **overrides})


def save_checkpoint(
    data_dir: Path,
    tokenizer: tokenizers.Tokenizer,
    *,
    step: int,
    seed: int = 0,
    pointers: tuple[str, ...] = ("latest",),
    config: ModelConfig | None = None,
) -> tuple[Path, Transformer]:
    """A random-init model saved as the trainer saves one; returns its directory and the network."""
    config = config or tiny_config(tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = Transformer(config).eval()
    meta = {
        "format": 1,
        "step": step,
        "model": config.to_dict(),
        "parameters": model.parameter_count(),
        "tokenizer_hash": tokenizer.hash,
        "saved_at": time.time(),
    }
    store = CheckpointStore(Path(data_dir) / "checkpoints")
    directory = store.save(model.state_dict(), meta, None, pointers)
    return directory, model


def serve_settings(make_settings: Any, **overrides: Any) -> Settings:
    return make_settings(**{**SERVE, **overrides})
