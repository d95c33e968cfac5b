"""Tiny models for the export tests, built here from real text: nothing is downloaded.

- `build_factory(data_dir)`: what a factory has after training: a SentencePiece tokenizer generation
  trained on real English and Japanese text (tests/dataset/helpers.real_texts) and a small model trained
  briefly on that text, saved by CheckpointStore as `latest` and `best`. Trained rather than random,
  so its next-token choices are clear-cut and greedy decoding compares meaningfully.
- `llama_base(dir)` and `qwen2_base(dir)`: tiny random transformers models saved to disk as a hub model
  would be, the bases for LoRA: Llama with our SentencePiece tokenizer files, Qwen2 with a byte-level
  BPE tokenizer trained with Qwen2's pre-tokenizer regex.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from aifactory.dataset import tokenizer as tokenizers
from aifactory.export import template
from aifactory.model.config import ModelConfig, swiglu_hidden
from aifactory.model.llama import Transformer
from aifactory.train.checkpoint import CheckpointStore
from tests.dataset.helpers import real_texts

VOCAB = 800
EN_TRAIN, JA_TRAIN = 160, 60  # pages of each language the tokenizer and the model learn from
SAMPLE_EN = real_texts("en")[EN_TRAIN : EN_TRAIN + 40]  # held-out pages for tokenization checks
SAMPLE_JA = real_texts("ja")[JA_TRAIN : JA_TRAIN + 20]


def training_texts() -> list[tuple[str, str]]:
    return [("en", text) for text in real_texts("en")[:EN_TRAIN]] + [
        ("ja", text) for text in real_texts("ja")[:JA_TRAIN]
    ]


def tiny_config(vocab_size: int, *, tied: bool = True) -> ModelConfig:
    # 4 query heads over 2 key/value heads: the GGUF permutation of Wk uses the kv head count.
    return ModelConfig(
        vocab_size=vocab_size,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        intermediate_size=swiglu_hidden(64),
        max_seq_len=256,
        tie_embeddings=tied,
    )


def train_briefly(model: Transformer, ids: list[int], steps: int = 60, seq: int = 64) -> float:
    """A few AdamW steps on `ids`, on one thread (a tiny model runs faster on one, and the tests share
    the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, torch.tensor(ids), steps, seq)
    finally:
        torch.set_num_threads(threads)


def _train(model: Transformer, data: torch.Tensor, steps: int, seq: int) -> float:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (8,), generator=generator)
        batch = torch.stack([data[s : s + seq + 1] for s in starts.tolist()])
        loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def save_checkpoint(store: CheckpointStore, model: Transformer, tokenizer_hash: str, step: int) -> Path:
    meta = {
        "format": 1,
        "step": step,
        "model": model.config.to_dict(),
        "parameters": model.parameter_count(),
        "tokenizer_hash": tokenizer_hash,
        "dataset_version": "g1-v1",
        "state": {"tokens_seen": step * 512, "val_loss": 4.2, "val_bpb": 1.9},
        "saved_at": time.time(),
        "aifactory_version": "test",
    }
    return store.save(model.state_dict(), meta, None, ("latest", "best"))


def build_factory(data_dir: Path) -> tokenizers.Tokenizer:
    """DATA_DIR with tokenizer generation 1 and a briefly trained model as latest and best."""
    tokenizer = tokenizers.train(data_dir, 1, training_texts(), vocab_size=VOCAB, model_type="bpe", threads=1)
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size))
    ids: list[int] = []
    for _, text in training_texts():
        ids += tokenizer.encode_document(text)
    train_briefly(model, ids)
    save_checkpoint(CheckpointStore(data_dir / "checkpoints"), model.eval(), tokenizer.hash, step=60)
    return tokenizer


def llama_base(directory: Path, tokenizer: tokenizers.Tokenizer) -> Path:
    """A tiny random LlamaForCausalLM with our tokenizer's HF files, saved like a hub download."""
    import transformers

    from aifactory.export.hf import tokenizer_files

    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        tie_word_embeddings=False,
        initializer_range=0.2,  # decisive logits from random weights, so comparisons mean something
    )
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    for name, text in tokenizer_files(tokenizer, 256).items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "tokenizer.model").write_bytes(tokenizer.model_path.read_bytes())
    return directory


QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def qwen2_base(directory: Path) -> Path:
    """A tiny random Qwen2ForCausalLM with a byte-level BPE tokenizer split by Qwen2's regex."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from aifactory.export.vocab import PRE_TOKENIZERS

    pattern = next(regex for regex, name in PRE_TOKENIZERS.items() if name == "qwen2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=QWEN2_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([text for _, text in training_texts()], trainer)
    directory.mkdir(parents=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "add_bos_token": False,
            }
        )
    )
    eos = tok.token_to_id("<|endoftext|>")
    config = transformers.Qwen2Config(
        vocab_size=768,  # padded past the tokenizer, as Qwen2's embedding matrices are
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=eos,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    torch.manual_seed(2)
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is LibreOffice?"},
    {"role": "assistant", "content": "An office suite."},
    {"role": "user", "content": "表計算は?"},
]


def serving_prompt(tokenizer: tokenizers.Tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The prompt serving builds for `messages` (BOS, then marker + text + <|end|> per turn, then the
    assistant marker): what every exported chat template must reproduce."""
    ids = [tokenizer.bos_id]
    for message in messages:
        marker = {"system": template.SYSTEM, "user": template.USER, "assistant": template.ASSISTANT}
        ids += [tokenizer.special_ids[marker[message["role"]]], *tokenizer.encode(message["content"])]
        ids.append(tokenizer.special_ids[template.END])
    return [*ids, tokenizer.special_ids[template.ASSISTANT]]
