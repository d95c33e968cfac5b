"""Model FLOP utilisation: useful training FLOPs per second over what this machine's matmuls can do.

The denominator is *measured*, not taken from a datasheet: the best rate of a large square matmul in the
training precision on the training device with the trainer's thread count. MFU = tokens/s x FLOPs per
token (ModelConfig.flops_per_token) / that peak. On a CPU this tells how close the trainer gets to the
machine's matmul speed; on a GPU it is comparable to the MFU figures papers report.
"""

from __future__ import annotations

import functools
import time

import torch


@functools.lru_cache(maxsize=8)
def peak_flops(device: str, dtype: torch.dtype = torch.float32, threads: int = 0) -> float:
    """measure_peak_flops, once per process for each (device, dtype, thread count)."""
    return measure_peak_flops(device, dtype)


def measure_peak_flops(device: str, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of an n x n matmul (n = 2048 on CPU, 8192 on CUDA), repeated for about half a second.

    The best repetition, not the mean: other processes on the machine slow some repetitions down, and
    the peak is what the hardware can do."""
    where = torch.device(device)
    n = 8192 if where.type == "cuda" else 2048
    a = torch.randn(n, n, device=where, dtype=dtype)
    b = torch.randn(n, n, device=where, dtype=dtype)
    out = torch.empty(n, n, device=where, dtype=dtype)
    best, spent, repetitions = float("inf"), 0.0, 0
    while repetitions < 5 or (spent < 0.5 and repetitions < 50):
        _sync(where)
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(where)
        elapsed = time.perf_counter() - started
        spent += elapsed
        repetitions += 1
        if repetitions > 2:  # the first runs pay for kernel selection and warm-up
            best = min(best, elapsed)
    return 2.0 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
