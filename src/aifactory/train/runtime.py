"""Where and how the trainer computes: device, precision, CPU threads, and DDP when run by torchrun.

- CUDA: TF32 matmuls, and with TRAIN_USE_AMP bf16 autocast where the GPU supports it (fp16 with a
  gradient scaler otherwise). Attention goes through SDPA, which picks flash attention there.
- Apple GPU (MPS): fp32. CPU: fp32 with PYTORCH_CPU_THREADS threads (auto: cores - 1, from the
  auto-tune profile), split between the processes when several train on one CPU.
- `torchrun --nproc_per_node N` sets RANK/WORLD_SIZE/LOCAL_RANK: the process group is started here
  (NCCL on CUDA, gloo on CPU) and the trainer wraps the model in DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aifactory.autotune import resolve_profile
from aifactory.settings import Settings


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None: full fp32
    use_scaler: bool = False  # fp16 autocast needs loss scaling; bf16 does not
    threads: int = 1
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, "fp32")  # type: ignore[arg-type]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any (a stop request must be taken by all at once)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def describe(self) -> str:
        where = str(self.device) + (f", {self.threads} threads" if self.device.type == "cpu" else "")
        ddp = f", DDP rank {self.rank}/{self.world_size}" if self.distributed else ""
        return f"{where}, {self.precision}{ddp}"


def setup_runtime(settings: Settings, device: str | None = None) -> Runtime:
    """Choose the device and precision, set threads, and join the torchrun process group if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        if torch.cuda.is_available():
            device = f"cuda:{local_rank}"
        elif torch.backends.mps.is_available() and world_size == 1:
            device = "mps"
        else:
            device = "cpu"
    where = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
    threads = resolve_profile(settings).pytorch_cpu_threads
    if where.type == "cpu" and world_size > 1:
        threads = max(1, threads // world_size)  # processes on one CPU share its cores
    torch.set_num_threads(threads)
    runtime = Runtime(device=where, threads=threads, rank=rank, world_size=world_size)
    if where.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for fp32 matmuls: ~8x on Ampere+, ample precision
        torch.backends.cudnn.allow_tf32 = True
        if settings.train_use_amp:
            if torch.cuda.is_bf16_supported():
                runtime.autocast_dtype = torch.bfloat16
            else:
                runtime.autocast_dtype, runtime.use_scaler = torch.float16, True
    return runtime


def shutdown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
