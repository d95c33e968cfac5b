"""The hand-written backward passes equal the plain formulas, values and gradients (in float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aifactory.model.chunked_loss import linear_cross_entropy
from aifactory.model.fused import rms_norm, rotary_qkv, swiglu
from aifactory.model.llama import rotary_tables

f64 = dict(dtype=torch.float64)


def test_rms_norm_matches_torch() -> None:
    x = torch.randn(3, 5, 16, **f64, requires_grad=True)
    weight = torch.rand(16, **f64, requires_grad=True)
    assert torch.allclose(rms_norm(x, weight, 1e-5), F.rms_norm(x, (16,), weight, 1e-5))
    assert torch.autograd.gradcheck(lambda a, w: rms_norm(a, w, 1e-5), (x, weight))


def rotate_half_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' apply_rotary_pos_emb for x [B, heads, T, head_dim], cos/sin [T, head_dim / 2]."""
    cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def test_rotary_qkv_splits_and_rotates_like_hf() -> None:
    n_head, n_kv, T, head_dim = 4, 2, 7, 8
    cos, sin = (t.to(torch.float64) for t in rotary_tables(head_dim, T, 10000.0))
    qkv = torch.randn(2, T, n_head + 2 * n_kv, head_dim, **f64, requires_grad=True)
    q, k, v = rotary_qkv(qkv, cos[:, None], sin[:, None], n_head, n_kv)
    heads = qkv.transpose(1, 2)  # [B, heads, T, head_dim]
    assert torch.allclose(q, rotate_half_reference(heads[:, :n_head], cos, sin))
    assert torch.allclose(k, rotate_half_reference(heads[:, n_head : n_head + n_kv], cos, sin))
    assert torch.equal(v, heads[:, n_head + n_kv :])
    assert torch.autograd.gradcheck(lambda t: rotary_qkv(t, cos[:, None], sin[:, None], n_head, n_kv), (qkv,))


def test_swiglu_is_silu_gate_times_up() -> None:
    gate_up = torch.randn(3, 4, 2 * 6, **f64, requires_grad=True)
    gate, up = gate_up.chunk(2, dim=-1)
    assert torch.allclose(swiglu(gate_up), F.silu(gate) * up)
    assert torch.autograd.gradcheck(swiglu, (gate_up,))


@pytest.mark.parametrize("chunk_rows", [1, 4, 64])
def test_linear_cross_entropy_matches_logits_then_cross_entropy(chunk_rows: int) -> None:
    x = torch.randn(10, 8, **f64, requires_grad=True)  # 10 rows: chunks of 4 leave a remainder
    weight = torch.randn(13, 8, **f64, requires_grad=True)
    targets = torch.randint(0, 13, (10,))
    targets[[2, 7]] = -1
    ours = linear_cross_entropy(x, weight, targets, chunk_rows)
    plain = F.cross_entropy(F.linear(x, weight), targets, ignore_index=-1)
    assert torch.allclose(ours, plain)
    assert torch.autograd.gradcheck(lambda a, w: linear_cross_entropy(a, w, targets, chunk_rows), (x, weight))


def test_linear_cross_entropy_under_bf16_autocast_stays_close_to_fp32() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    weight = (torch.randn(50, 32) * 0.1).requires_grad_()
    targets = torch.randint(0, 50, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = linear_cross_entropy(x, weight, targets)
    low.backward()
    assert low.dtype == torch.float32 and x.grad.dtype == weight.grad.dtype == torch.float32
    exact_x, exact_w = x.detach().requires_grad_(), weight.detach().requires_grad_()
    exact = F.cross_entropy(F.linear(exact_x, exact_w), targets)
    exact.backward()
    assert abs(low.item() - exact.item()) < 0.02
    assert torch.allclose(x.grad, exact_x.grad, atol=2e-3) and torch.allclose(
        weight.grad, exact_w.grad, atol=2e-3
    )
