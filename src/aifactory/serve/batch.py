"""The forward passes of serving: prefill one prompt, then decode many sequences in one step.

The training model (`model/llama.py`) runs a batch whose rows all sit at the same position. Serving
runs rows that each sit at their own position: requests join and leave the running batch at any step
(continuous batching). So the key/value cache here keeps one *slot* per request with its own length,
and a decode step feeds one token per active slot at that slot's position: rotary angles per row, the
new key and value written at each row's position, and a mask that lets each row see only its own past.

Active slots are kept contiguous (rows 0..n-1, a leaving request's row is filled with the last one), so
each step's attention reads a view of the cache instead of gathering rows. A prompt is prefilled into a
one-row scratch cache, chunk by chunk between decode steps (so a long prompt does not stall the other
streams), and copied into the batch when it is done.

ServingModel shares the Transformer's weights and computes exactly its arithmetic (tests compare
logits); with `quantize` its Linear layers, the output head included, become int8 dynamically quantized.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from aifactory.model.config import ModelConfig
from aifactory.model.llama import Transformer, rotary_tables

GROW = 256  # cache positions are allocated in steps of this many


class ServingModel(nn.Module):
    def __init__(self, model: Transformer, *, quantize: bool = False) -> None:
        super().__init__()
        config = model.config
        self.config: ModelConfig = config
        self.embed = model.embed
        self.layers = model.layers
        self.norm = model.norm
        head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        head.weight = model.embed.weight if model.lm_head is None else model.lm_head.weight
        self.head = head
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.quantized = False
        if quantize:
            self.quantized = quantize_int8(self)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = int(positions.max()) + 1
        if end > self.rope_cos.size(0):  # longer than trained for: extend the tables (RoPE extrapolates)
            c = self.config
            self.rope_cos, self.rope_sin = rotary_tables(c.head_dim, 2 * end, c.rope_theta, self.device)
        return self.rope_cos[positions], self.rope_sin[positions]


def quantize_int8(module: nn.Module) -> bool:
    """int8 dynamic quantization of every Linear, in place; False where this torch cannot do it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return False
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return True


class SlotCache:
    """Keys and values, [layer, slot, kv_head, position, head_dim], grown in steps of GROW positions."""

    def __init__(self, config: ModelConfig, slots: int, device: torch.device, dtype: torch.dtype) -> None:
        self.config, self.slots, self.device, self.dtype = config, slots, device, dtype
        self.capacity = 0
        self.k = self.v = torch.empty(0, device=device, dtype=dtype)
        self.reserve(GROW)

    def reserve(self, positions: int) -> None:
        if positions <= self.capacity:
            return
        # Doubling keeps growth rare; past the trained context only what is asked for is added.
        target = max(positions, min(2 * self.capacity, max(self.config.max_seq_len, positions)))
        capacity = -(-target // GROW) * GROW
        c = self.config
        k = torch.zeros(
            c.n_layer, self.slots, c.n_kv_head, capacity, c.head_dim, device=self.device, dtype=self.dtype
        )
        v = torch.zeros_like(k)
        if self.capacity:
            k[:, :, :, : self.capacity] = self.k
            v[:, :, :, : self.capacity] = self.v
        self.k, self.v, self.capacity = k, v, capacity

    def copy_row(self, source: SlotCache, source_row: int, row: int, length: int) -> None:
        self.reserve(length)
        self.k[:, row, :, :length] = source.k[:, source_row, :, :length]
        self.v[:, row, :, :length] = source.v[:, source_row, :, :length]

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def _rotate(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """out = x rotated by its angles, half-split pairs (i, i + head_dim/2) as in model/llama.py."""
    half = x.size(-1) // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin)


def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # One native kernel: inference needs no custom backward (fp32 activations, as in training).
    return F.rms_norm(x, (x.size(-1),), module.weight, module.eps)


def _attend(
    model: ServingModel, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, write, read, mask, causal
):
    """The blocks over x [B, T, d]; `write(layer, k, v)` stores new keys, `read(layer)` gives all keys.

    The Transformer's arithmetic with fewer, larger ops (decoding is op-overhead bound on small models):
    q and k are rotated together in one pass over the fused projection, v is a view of it."""
    c = model.config
    B, T, _ = x.shape
    heads = c.n_head + c.n_kv_head
    for index, block in enumerate(model.layers):
        qkv = block.attn.qkv(_norm(block.attn_norm, x)).view(B, T, heads + c.n_kv_head, c.head_dim)
        qk = torch.empty(B, T, heads, c.head_dim, dtype=qkv.dtype, device=qkv.device)
        _rotate(qk, qkv[:, :, :heads], cos, sin)
        q = qk[:, :, : c.n_head].transpose(1, 2)  # [B, heads, T, head_dim] views
        k = qk[:, :, c.n_head :].transpose(1, 2)
        v = qkv[:, :, heads:].transpose(1, 2)
        write(index, k, v)
        keys, values = read(index)
        y = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=causal, enable_gqa=c.n_kv_head != c.n_head
        )
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_dim))
        gate, up = block.mlp.gate_up(_norm(block.mlp_norm, x)).chunk(2, dim=-1)
        x = x + block.mlp.down(F.silu(gate).mul_(up))
    return _norm(model.norm, x)


@torch.no_grad()
def prefill(
    model: ServingModel, cache: SlotCache, row: int, ids: list[int], start: int, *, all_logits: bool
) -> torch.Tensor:
    """Feed `ids` at positions start.. into slot `row`; logits of every position or of the last one."""
    T = len(ids)
    cache.reserve(start + T)
    device = model.device
    positions = torch.arange(start, start + T, device=device)
    cos, sin = model.rotary(positions)
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, head_dim/2] broadcasts over the heads
    x = model.embed(torch.tensor([ids], device=device))
    end = start + T

    def write(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        cache.k[layer, row, :, start:end] = k[0]
        cache.v[layer, row, :, start:end] = v[0]

    def read(layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return cache.k[layer, row : row + 1, :, :end], cache.v[layer, row : row + 1, :, :end]

    mask = None
    if start:  # a chunk after a prefix: each query sees the prefix and its own past (bottom-right causal)
        mask = torch.ones(T, end, dtype=torch.bool, device=device).tril(start)
    x = _attend(model, x, cos, sin, write, read, mask, causal=start == 0)
    return model.head(x[0] if all_logits else x[0, -1:])


@torch.no_grad()
def decode(
    model: ServingModel, cache: SlotCache, tokens: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """One step for slots 0..n-1: token i at positions[i] in slot i. Returns logits [n, vocab]."""
    n = tokens.numel()
    length = int(positions.max()) + 1
    cache.reserve(length)
    cos, sin = model.rotary(positions)
    cos, sin = cos[:, None, None, :], sin[:, None, None, :]  # [n, 1, 1, head_dim/2]: one angle per row
    x = model.embed(tokens)[:, None, :]
    rows = torch.arange(n, device=tokens.device)

    def write(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        cache.k[layer, rows, :, positions] = k[:, :, 0]
        cache.v[layer, rows, :, positions] = v[:, :, 0]

    def read(layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return cache.k[layer, :n, :, :length], cache.v[layer, :n, :, :length]

    mask = None
    if n > 1 and bool((positions != length - 1).any()):
        mask = (torch.arange(length, device=tokens.device)[None, :] <= positions[:, None])[:, None, None, :]
    x = _attend(model, x, cos, sin, write, read, mask, causal=False)
    return model.head(x[:, 0])
