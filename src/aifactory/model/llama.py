"""The network: a decoder-only transformer with exactly Hugging Face LlamaForCausalLM's arithmetic.

Pre-norm blocks: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x)), then a final RMSNorm and the lm_head.
- RMSNorm with a learned weight, eps 1e-5, normalised in fp32 (as HF and llama.cpp do).
- Rotary position embeddings in the *half-split* layout HF uses (channel i pairs with i + head_dim/2),
  so weights export to HF as they are (GGUF export permutes Wq/Wk rows, see docs/model.md).
- Attention through F.scaled_dot_product_attention (flash/efficient kernels on CUDA), causal, optional
  grouped-query attention (fewer key/value heads), no biases anywhere.
- SwiGLU MLP: down(silu(gate(x)) * up(x)).
- Tied or untied embeddings.

For speed, q/k/v are one matmul (`attn.qkv`) and gate/up another (`mlp.gate_up`): fewer, larger GEMMs
and one read of the activations instead of three. `model/hf.py` splits them into HF's separate
projections, row blocks in the order [q | k | v] and [gate | up]; nothing else differs.

`forward` also takes a KVCache for incremental decoding (the serving side uses it): feeding tokens one
chunk at a time through the cache gives the same logits as one full forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aifactory.model.chunked_loss import linear_cross_entropy, token_losses
from aifactory.model.config import ModelConfig
from aifactory.model.fused import rms_norm, rotary_qkv, swiglu

INIT_STD = 0.02


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype  # bf16/fp16 activations are normalised in fp32, as HF does, then cast back
        x, weight = x.float(), self.weight.float()
        if x.is_cuda:  # a fused native kernel, forward and backward
            return F.rms_norm(x, (x.size(-1),), weight, self.eps).to(dtype)
        return rms_norm(x, weight, self.eps).to(dtype)  # fewer passes than the composite F.rms_norm


def rotary_tables(head_dim: int, length: int, theta: float, device: torch.device | None = None):
    """cos and sin, each [length, head_dim / 2], fp32: angle = position * theta^(-2i/head_dim)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim)
    )
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to `max_len`.

    Layout [layer, batch, kv_heads, position, head_dim]. The model writes each layer's new keys at
    `length` and advances `length` once the whole forward is done."""

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, count: int) -> None:
        self.length += count


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.qkv = nn.Linear(
            config.n_embd, (config.n_head + 2 * config.n_kv_head) * config.head_dim, bias=False
        )
        self.proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim)
        q, k, v = rotary_qkv(qkv, cos, sin, self.n_head, self.n_kv_head)  # each [B, heads, T, head_dim]
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        mask, causal = None, True
        if k.size(2) != T:  # decoding after a prefix: queries sit at the end of the key sequence
            causal = False
            if T > 1:  # SDPA's is_causal aligns top-left; a chunk after a prefix needs bottom-right
                mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.n_kv_head != self.n_head
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.n_embd, 2 * config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(swiglu(self.gate_up(x)))  # silu(gate) * up


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        )
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        # Not persistent: derived from the config, so checkpoints hold weights only (HF's layout).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) everywhere; the two projections that write into the residual stream are scaled
        by 1/sqrt(2 * layers) (GPT-2) so the residual's variance does not grow with depth."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                param.normal_(0.0, residual_std)
            else:
                param.normal_(0.0, INIT_STD)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _rotary(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + length
        if end > self.rope_cos.size(0):  # longer than trained for: extend the tables (RoPE extrapolates)
            cos, sin = rotary_tables(
                self.config.head_dim, 2 * end, self.config.rope_theta, self.rope_cos.device
            )
            self.rope_cos, self.rope_sin = cos, sin
        cos = self.rope_cos[start:end, None, :].to(dtype)  # [T, 1, head_dim/2] broadcasts over heads
        sin = self.rope_sin[start:end, None, :].to(dtype)
        return cos, sin

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Logits [B, T, vocab] for `idx` [B, T]; with `targets`, the cross-entropy instead
        (`reduction="none"` gives it per token, -1 targets are ignored)."""
        start = cache.length if cache is not None else 0
        x = self.embed(idx)
        dtype = (
            torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        )
        cos, sin = self._rotary(start, idx.size(1), dtype)
        for block in self.layers:
            x = block(x, cos, sin, cache)
        if cache is not None:
            cache.advance(idx.size(1))
        x = self.norm(x)
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        if targets is not None and reduction == "mean" and torch.is_grad_enabled():
            # Training: loss and its gradient chunk by chunk, never the whole [B, T, vocab] logits.
            return linear_cross_entropy(x.view(-1, x.size(-1)), head, targets.reshape(-1))
        if targets is not None and reduction == "none" and not torch.is_grad_enabled():
            # Evaluation: per-token losses chunk by chunk, again without the whole logits.
            return token_losses(x.reshape(-1, x.size(-1)), head, targets.reshape(-1)).view(targets.shape)
        logits = F.linear(x, head)
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=reduction,
        )
        return loss.view(targets.shape) if reduction == "none" else loss
