"""Auto-tune: look at the machine (cores, memory, GPU) and choose sensible defaults.

With `AUTO_TUNE=1`, settings left at `auto` (model size, batch size, sequence length, max generate
tokens, crawler workers, torch threads) come from the table below; an explicit setting always wins.
`AUTO_TUNE_REALTIME=1` re-evaluates the memory-sensitive limits from the memory free right now, so a
machine that gets busy lowers its batch, sequence and crawler limits instead of running out of memory.
The GPU is found with `nvidia-smi`, so the web server never has to import torch to answer.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

import psutil

from aifactory.settings import AUTO_FALLBACKS, Settings

GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    cpu_cores: int
    total_ram_gb: float
    available_ram_gb: float
    device: str  # cuda, mps or cpu
    gpu_name: str = ""
    gpu_memory_gb: float = 0.0


@dataclass(frozen=True)
class Profile:
    """The values in force on this node, and which of them auto-tune chose."""

    device: str
    cpu_cores: int
    total_ram_gb: float
    available_ram_gb: float
    gpu_name: str
    gpu_memory_gb: float
    model_size: str
    train_batch_size: int
    train_seq_len: int
    max_generate_tokens: int
    max_crawler_workers: int
    pytorch_cpu_threads: int
    spm_num_threads: int
    auto_tune: bool
    auto_chosen: tuple[str, ...]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["auto_chosen"] = list(self.auto_chosen)
        return data


def cpu_cores() -> int:
    """Cores this process may use (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def detect_gpu() -> tuple[str, str, float]:
    """(device, name, memory GiB). Cached: GPUs do not come and go while a node runs."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = (
                subprocess.run(
                    [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                name, memory_mib = (part.strip() for part in out[0].split(",", 1))
                return "cuda", name, round(float(memory_mib) / 1024, 1)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "mps", "Apple GPU", 0.0
    return "cpu", "", 0.0


def detect_hardware() -> Hardware:
    memory = psutil.virtual_memory()
    device, name, gpu_memory = detect_gpu()
    return Hardware(
        cpu_cores=cpu_cores(),
        total_ram_gb=round(memory.total / GIB, 1),
        available_ram_gb=round(memory.available / GIB, 1),
        device=device,
        gpu_name=name,
        gpu_memory_gb=gpu_memory,
    )


# (GPU memory GiB at least, (model size, sequence length, micro-batch, max generate tokens)): bf16
# activations of that micro-batch fit with the model's fp32 weights and AdamW state; fewer sequences
# per micro-batch than the tokens per step wanted are made up by accumulation (TRAIN_TOKENS_PER_STEP).
GPU_PRESETS = (
    (70.0, ("medium", 2048, 32, 1024)),  # H100/H200/A100 80 GB
    (40.0, ("medium", 2048, 16, 1024)),  # A100 40 GB, L40S, A6000
    (20.0, ("base", 1024, 16, 768)),  # RTX 3090/4090, A10
    (10.0, ("base", 1024, 8, 512)),  # RTX 3080, T4 (16 GB)
)


def gpu_preset(memory_gb: float) -> tuple[str, int, int, int]:
    for least, preset in GPU_PRESETS:
        if memory_gb >= least:
            return preset
    return "base", 512, 8, 384  # the original's choice for any GPU (also when its memory is unknown)


def recommend(hw: Hardware, realtime: bool) -> dict[str, int | str]:
    """The auto-tune table (kept from the original so existing users see the same choices)."""
    if hw.device == "cuda":
        size, seq, batch, tokens = gpu_preset(hw.gpu_memory_gb)
    elif hw.total_ram_gb >= 24:
        size, seq, batch, tokens = "small", 512, 6, 256
    elif hw.total_ram_gb >= 12:
        size, seq, batch, tokens = "small", 384, 4, 192
    elif hw.total_ram_gb >= 8:
        size, seq, batch, tokens = "tiny", 256, 3, 128
    else:
        size, seq, batch, tokens = "tiny", 128, 2, 96
    workers = min(16, 2 * hw.cpu_cores)
    if realtime and hw.device != "cuda":
        # Memory-sensitive limits shrink when the machine is short of free memory right now.
        if hw.available_ram_gb < 1.5:
            batch, seq, tokens = max(1, batch - 2), max(96, seq // 2), max(64, tokens // 2)
            workers = max(2, workers // 4)
        elif hw.available_ram_gb < 3:
            batch, seq = max(1, batch - 1), max(128, int(seq * 0.75))
            workers = max(2, workers // 2)
    threads = max(1, hw.cpu_cores - 1)
    return {
        "model_size": size,
        "train_batch_size": batch,
        "train_seq_len": seq,
        "max_generate_tokens": tokens,
        "max_crawler_workers": workers,
        "pytorch_cpu_threads": threads,
        "spm_num_threads": threads,
    }


def resolve_profile(settings: Settings, hw: Hardware | None = None) -> Profile:
    """Explicit settings win; otherwise auto-tune (if on) or the original's fixed defaults."""
    hw = hw or detect_hardware()
    threads = max(1, hw.cpu_cores - 1)
    fixed = {**AUTO_FALLBACKS, "pytorch_cpu_threads": threads, "spm_num_threads": threads}
    auto = recommend(hw, settings.auto_tune_realtime) if settings.auto_tune else {}
    values: dict[str, int | str] = {}
    chosen = []
    for name in AUTO_FALLBACKS:
        explicit = getattr(settings, name)
        if explicit is not None:
            values[name] = explicit
        elif name in auto:
            values[name] = auto[name]
            chosen.append(name)
        else:
            values[name] = fixed[name]
    return Profile(
        device=hw.device,
        cpu_cores=hw.cpu_cores,
        total_ram_gb=hw.total_ram_gb,
        available_ram_gb=hw.available_ram_gb,
        gpu_name=hw.gpu_name,
        gpu_memory_gb=hw.gpu_memory_gb,
        auto_tune=settings.auto_tune,
        auto_chosen=tuple(chosen),
        **values,  # type: ignore[arg-type]
    )
