"""Loading a GGUF in llama.cpp (llama-cpp-python) for the tests and the benchmark.

On CPUs with AMX (Intel Sapphire Rapids and later), llama.cpp 0.3.36's AMX buffer type crashes with a
segmentation fault on batched evaluation of Q8_0 weights: of any Q8_0 file, llama.cpp's own
quantizer's output included (checked on the CI machine). There, and only there, weights are loaded
without llama.cpp's extra buffer types (what `llama-cli --no-repack` does), which keeps the file and
the arithmetic the same and avoids that kernel.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@functools.cache
def cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def _without_extra_buffer_types() -> Iterator[None]:
    import llama_cpp.llama as module

    default = module.llama_cpp.llama_model_default_params

    def params() -> Any:
        value = default()
        value.use_extra_bufts = False
        return value

    module.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_cpp.llama_model_default_params = default


def load(path: Path, *, threads: int = 1, context: int = 256, **options: Any) -> Any:
    import llama_cpp

    guard = _without_extra_buffer_types() if cpu_has_amx() else contextlib.nullcontext()
    with guard:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            seed=0,
            **options,
        )
