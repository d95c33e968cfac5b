"""Cross-entropy of the lm_head's logits without ever holding all the logits.

The plain way (logits = x @ W^T, then F.cross_entropy) writes a [tokens, vocab] fp32 tensor, reads it
back for log-softmax, again for its backward, and fills another one with the gradient: at vocab 8000
and 2048 tokens that is 64 MB per pass, and on a CPU those passes cost a fifth of a training step.
Here the rows are processed in chunks: each chunk's logits, loss and gradient (softmax - one-hot) are
made while the chunk is still in cache, and turned into the gradients of x and W at once (the same
three matmuls autograd would do). The gradients are kept for backward, scaled by the incoming one.
The idea is Liger-Kernel's "fused linear cross entropy", in plain PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ROWS = 512  # a [512, vocab] fp32 chunk: large enough for efficient matmuls, small enough for cache


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int
    ) -> torch.Tensor:
        device = x.device.type
        # Under autocast the matmuls run in its dtype (bf16/fp16); softmax and sums at least in fp32.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        work = torch.promote_types(dtype, torch.float32)
        valid = targets != -1
        count = valid.sum().clamp(min=1)  # mean over real targets, as F.cross_entropy(ignore_index=-1)
        # Masking ignored rows costs a pass per chunk, so eager mode on a CPU skips it when there are
        # none; a compiled graph cannot branch on data, and on a GPU asking would be a host sync per
        # micro-batch (the pass is cheap there): both always mask.
        any_ignored = torch.compiler.is_compiling() or x.is_cuda or bool((~valid).any())
        safe_targets = targets.clamp(min=0)[:, None]
        with torch.autocast(device, enabled=False):
            xc, wc = x.to(dtype), weight.to(dtype)
            grad_x = torch.empty_like(xc)
            grad_w = torch.zeros_like(weight, dtype=work)
            total = torch.zeros((), dtype=work, device=x.device)
            buffer = torch.empty(min(chunk_rows, x.size(0)), weight.size(0), dtype=dtype, device=x.device)
            for start in range(0, x.size(0), chunk_rows):
                rows = slice(start, start + chunk_rows)
                xs, ts = xc[rows], safe_targets[rows]
                logits = torch.mm(xs, wc.t(), out=buffer[: xs.size(0)]).to(work)
                logp = torch.log_softmax(logits, dim=-1, out=logits)  # in place: the chunk is reused
                picked = logp.gather(1, ts)
                # d loss / d logits = softmax - one_hot (zero on ignored rows), in place of the logits.
                probs = logp.exp_()
                probs.scatter_add_(1, ts, torch.full_like(picked, -1.0))
                if any_ignored:
                    ok = valid[rows, None]
                    picked.mul_(ok)
                    probs.mul_(ok)
                total -= picked.sum()
                probs = probs.to(dtype)
                torch.mm(probs, wc, out=grad_x[rows])
                if dtype == work:
                    grad_w.addmm_(probs.t(), xs)
                else:
                    grad_w += (probs.t() @ xs).to(work)
        ctx.weight_dtype, ctx.x_dtype = weight.dtype, x.dtype
        ctx.save_for_backward(grad_x, grad_w, count)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        return (grad_x * scale).to(ctx.x_dtype), (grad_w * scale).to(ctx.weight_dtype), None, None


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy of softmax(x @ weight^T) against targets (-1 = ignored); x is [N, d]."""
    return LinearCrossEntropy.apply(x, weight, targets, chunk_rows)


@torch.no_grad()
def token_losses(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """Per-token cross-entropy [N] (fp32, 0 where the target is -1) of softmax(x @ weight^T), chunk by
    chunk: evaluation never holds the [N, vocab] logits either."""
    out = torch.empty(x.size(0), dtype=torch.float32, device=x.device)
    for start in range(0, x.size(0), chunk_rows):
        rows = slice(start, start + chunk_rows)
        logits = torch.nn.functional.linear(x[rows], weight).float()
        out[rows] = torch.nn.functional.cross_entropy(
            logits, targets[rows], ignore_index=-1, reduction="none"
        )
    return out
