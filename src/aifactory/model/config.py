"""The model's shape: ModelConfig, the MODEL_SIZE presets, and how settings and checkpoints choose one.

The shape is exactly what Hugging Face's LlamaConfig describes (see `model/hf.py`), so every model we
train can be exported without conversion tricks. This module does not import torch: the CLI and the web
server read configs from checkpoint metadata without loading the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# MODEL_SIZE -> (layers, heads, width). Head dim is 64 everywhere, as in the original product.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (4, 4, 256),
    "small": (8, 8, 512),
    "base": (12, 12, 768),
    "medium": (16, 16, 1024),
}
ROPE_THETA = 10000.0  # Llama 2's base; what HF and llama.cpp assume when config.json says nothing else
NORM_EPS = 1e-5


class ModelConfigError(ValueError):
    """A shape that cannot be built, or settings that contradict the checkpoint being resumed."""


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU width: 8/3 x width keeps the MLP's parameters at those of a 4x GELU MLP (Llama's rule),
    rounded up to a multiple of 64 so the matmuls stay aligned."""
    hidden = 8 * n_embd // 3
    return -(-hidden // 64) * 64


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int  # < n_head: grouped-query attention (n_head must be a multiple)
    n_embd: int
    intermediate_size: int
    max_seq_len: int = 2048  # context trained for; RoPE itself has no learned positions and extends
    rope_theta: float = ROPE_THETA
    norm_eps: float = NORM_EPS
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix

    def __post_init__(self) -> None:
        problems = []
        if min(self.vocab_size, self.n_layer, self.n_head, self.n_kv_head, self.n_embd) < 1:
            problems.append("sizes must be positive")
        elif self.n_embd % self.n_head:
            problems.append(f"width {self.n_embd} is not a multiple of the {self.n_head} heads")
        elif (self.n_embd // self.n_head) % 2:
            problems.append(f"head dim {self.n_embd // self.n_head} must be even (rotary pairs)")
        elif self.n_head % self.n_kv_head:
            problems.append(f"{self.n_head} heads are not a multiple of {self.n_kv_head} key/value heads")
        if problems:
            raise ModelConfigError(f"invalid model shape {self.short()}: {'; '.join(problems)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def short(self) -> str:
        kv = f"/{self.n_kv_head}kv" if self.n_kv_head != self.n_head else ""
        return f"{self.n_layer}L {self.n_head}H{kv} {self.n_embd}d vocab {self.vocab_size}"

    # --- sizes ----------------------------------------------------------------------------------------
    def block_params(self) -> int:
        d, hd = self.n_embd, self.head_dim
        attention = d * (self.n_head + 2 * self.n_kv_head) * hd + self.n_head * hd * d
        mlp = 3 * d * self.intermediate_size
        return attention + mlp + 2 * d  # two RMSNorm weights

    def parameter_count(self) -> int:
        embeddings = self.vocab_size * self.n_embd * (1 if self.tie_embeddings else 2)
        return embeddings + self.n_layer * self.block_params() + self.n_embd

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6 per weight of every matmul (the lm_head
        included, the embedding lookup not) plus attention's score and value products (PaLM's
        appendix B formula, as nanochat uses it)."""
        matmul_weights = (
            self.n_layer * (self.block_params() - 2 * self.n_embd) + self.vocab_size * self.n_embd
        )
        attention = 12 * self.n_layer * self.n_head * self.head_dim * seq_len
        return 6.0 * matmul_weights + attention

    # --- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelConfigError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)

    def architecture(self) -> dict[str, Any]:
        """The fields the weights depend on: two configs with equal architecture share checkpoints."""
        data = self.to_dict()
        data.pop("max_seq_len")
        return data


def preset(
    size: str, vocab_size: int, *, max_seq_len: int = 2048, tie_embeddings: bool = True
) -> ModelConfig:
    if size not in PRESETS:
        raise ModelConfigError(f"unknown MODEL_SIZE {size!r}: use one of {', '.join(PRESETS)}")
    n_layer, n_head, n_embd = PRESETS[size]
    return ModelConfig(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_head,
        n_embd=n_embd,
        intermediate_size=swiglu_hidden(n_embd),
        max_seq_len=max_seq_len,
        tie_embeddings=tie_embeddings,
    )


def from_settings(settings: Any, model_size: str, vocab_size: int, seq_len: int) -> ModelConfig:
    """MODEL_SIZE's preset with TRAIN_N_LAYER / TRAIN_N_HEAD / TRAIN_N_EMBD / TRAIN_N_KV_HEAD applied.

    `model_size` is the resolved size (aifactory.autotune.resolve_profile); the vocabulary is the
    tokenizer's, never a setting, so model and tokenizer cannot disagree."""
    base = preset(model_size, vocab_size, max_seq_len=seq_len, tie_embeddings=settings.train_tie_embeddings)
    n_layer = settings.train_n_layer or base.n_layer
    n_head = settings.train_n_head or base.n_head
    n_embd = settings.train_n_embd or base.n_embd
    return ModelConfig(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=settings.train_n_kv_head or n_head,
        n_embd=n_embd,
        intermediate_size=swiglu_hidden(n_embd),
        max_seq_len=seq_len,
        tie_embeddings=settings.train_tie_embeddings,
    )


def explicit_shape_settings(settings: Any) -> list[str]:
    """The shape settings the user wrote down (env or .env) rather than left to auto-tune."""
    names = ["model_size", "train_n_layer", "train_n_head", "train_n_embd", "train_n_kv_head"]
    chosen = [name.upper() for name in names if getattr(settings, name) is not None]
    if "train_tie_embeddings" in settings.model_fields_set:
        chosen.append("TRAIN_TIE_EMBEDDINGS")
    return chosen


def reconcile(wanted: ModelConfig, saved: ModelConfig | None, explicit: list[str]) -> ModelConfig:
    """The shape to train: the checkpoint's, unless the settings explicitly ask for another one.

    Resuming must never silently start over (the original did, whenever a setting or the free memory
    changed). A checkpoint keeps its architecture when the shape settings are left on auto; an explicit
    setting that contradicts it is an error that names both, and a different vocabulary (a new tokenizer)
    is always one. Only the training context length may change freely: RoPE has no learned positions."""
    if saved is None:
        return wanted
    if saved.vocab_size != wanted.vocab_size:
        raise ModelConfigError(
            f"the checkpoint's vocabulary has {saved.vocab_size} tokens but the tokenizer has "
            f"{wanted.vocab_size}: a new tokenizer needs a new model (move the checkpoints away to start one)"
        )
    if saved.architecture() != wanted.architecture() and explicit:
        raise ModelConfigError(
            f"the checkpoint is {saved.short()} but the settings ({', '.join(explicit)}) ask for "
            f"{wanted.short()}: restore those settings, or move the checkpoints away to train a new model"
        )
    return replace(saved, max_seq_len=wanted.max_seq_len)
