"""Hand-written backward passes for the memory-bound steps between the matmuls.

Written as compositions of torch ops, RMSNorm, rotary embeddings and SwiGLU each leave autograd a chain
of small kernels that save intermediates and allocate a tensor per step, and splitting a fused
projection's output (q/k/v, gate/up) makes autograd glue the pieces' gradients back together with one
more full copy. On a CPU these passes are memory-bound and add up to a large share of a step.
The functions below compute the same values with fewer passes and write gradients straight into the
fused layout. tests/model/test_fused.py checks each against the plain formula, values and gradients.
"""

from __future__ import annotations

from typing import Any

import torch


class RMSNormFunction(torch.autograd.Function):
    """y = x * rsqrt(mean(x^2) + eps) * weight over the last dimension (fp32 input)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # ||x|| in one pass, no x^2 temporary: mean(x^2) = ||x||^2 / d.
        rstd = (
            torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1)).add_(eps)
        ).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return (x * rstd).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, rstd = ctx.saved_tensors
        x_hat = x * rstd
        grad_x_hat = grad * x_hat
        grad_weight = grad_x_hat.sum(dim=tuple(range(grad.dim() - 1)))
        # d/dx of x * rstd * w: rstd * (g * w - x_hat * mean(g * w * x_hat)); the mean is a mat-vec.
        proj = (grad_x_hat @ weight).div_(x.size(-1)).unsqueeze(-1)
        grad_x = (grad * weight).addcmul_(x_hat, proj, value=-1).mul_(rstd)
        return grad_x, grad_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return RMSNormFunction.apply(x, weight, eps)


def _rotate(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> None:
    """out = x rotated by +angle (sign 1) or -angle (sign -1), half-split pairs (i, i + d/2)."""
    half = x.size(-1) // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=sign)


class RotaryQKV(torch.autograd.Function):
    """Split a fused projection [B, T, n_head + 2 n_kv, head_dim] into q, k, v for attention, rotating
    q and k. Backward writes all three gradients into one fused tensor.

    q, k and v are returned as [B, heads, T, head_dim] views of [B, T, heads, head_dim] memory. SDPA
    accepts that layout and then writes its output in it too, so merging the heads again for the
    output projection is a free view instead of a copy (in both directions)."""

    @staticmethod
    def forward(
        ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_head: int, n_kv: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = torch.empty_like(qkv[:, :, :n_head])
        k = torch.empty_like(qkv[:, :, n_head : n_head + n_kv])
        _rotate(q, qkv[:, :, :n_head], cos, sin, 1.0)
        _rotate(k, qkv[:, :, n_head : n_head + n_kv], cos, sin, 1.0)
        v = qkv[:, :, n_head + n_kv :].clone()  # its own tensor: a Function's outputs must not alias
        ctx.save_for_backward(cos, sin)
        ctx.split = (n_head, n_kv)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    @staticmethod
    def backward(
        ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        cos, sin = ctx.saved_tensors
        n_head, n_kv = ctx.split
        B, _, T, head_dim = grad_q.shape
        grad = torch.empty(B, T, n_head + 2 * n_kv, head_dim, dtype=grad_q.dtype, device=grad_q.device)
        _rotate(grad[:, :, :n_head], grad_q.transpose(1, 2), cos, sin, -1.0)  # rotating back = transpose
        _rotate(grad[:, :, n_head : n_head + n_kv], grad_k.transpose(1, 2), cos, sin, -1.0)
        grad[:, :, n_head + n_kv :] = grad_v.transpose(1, 2)
        return grad, None, None, None, None


def rotary_qkv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_head: int, n_kv: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return RotaryQKV.apply(qkv, cos, sin, n_head, n_kv)


class SwiGLU(torch.autograd.Function):
    """silu(gate) * up from the fused [..., 2 * hidden] projection output [gate | up]."""

    @staticmethod
    def forward(ctx: Any, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        silu = torch.nn.functional.silu(gate)
        ctx.save_for_backward(gate_up, silu)  # kept, not recomputed: one pass less for its memory
        return silu * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        gate_up, silu = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        out = torch.empty_like(gate_up)
        grad_gate, grad_up = out.chunk(2, dim=-1)
        torch.mul(grad, silu, out=grad_up)
        torch.mul(grad, up, out=grad_gate)
        # silu's own fused backward kernel: grad * sigmoid(g) * (1 + g * (1 - sigmoid(g))) in one pass.
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return out


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    return SwiGLU.apply(gate_up)
