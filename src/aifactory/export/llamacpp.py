"""A GGUF in llama.cpp (through llama-cpp-python, when it is installed): loading it, and checking it.

`check_gguf(source, path)` is what `aifactory export gguf --check` runs after writing: llama.cpp must
tokenize a text to our tokenizer's ids and compute the same next-token logits as our model (F32 and
F16 within a small tolerance, Q8_0 within quantisation error, with the same best token nearly
everywhere). A wrong rotary layout, vocabulary or special token shows up here instead of as a model
that "spits gibberish" in Ollama.

On CPUs with AMX (Intel Sapphire Rapids and later), llama.cpp 0.3.36's AMX buffer type crashes with a
segmentation fault on batched evaluation of Q8_0 weights, of any Q8_0 file (llama.cpp's own
quantizer's output included). There, and only there, weights are loaded without llama.cpp's extra
buffer types, as `llama-cli --no-repack` does: same file, same arithmetic, another kernel.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory.export import ExportError

if TYPE_CHECKING:
    from aifactory.export.source import ExportSource

CHECK_TEXT = (
    "The factory collects text from the web, cleans it and trains its own model on it.\n"
    "工場はウェブから文章を集め、整えて、自分のモデルを学習します。 1234 + 5678 = 6912"
)
TOLERANCE = {"f32": 1e-3, "f16": 0.05, "q8_0": 0.5}  # max |logit difference| relative to the largest logit


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
    """A llama_cpp.Llama for the GGUF at `path` (quiet, seeded)."""
    try:
        import llama_cpp
    except ImportError:
        raise ExportError("checking a GGUF needs llama-cpp-python: pip install llama-cpp-python") from None
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


def check_gguf(source: ExportSource, path: Path, kind: str, text: str = CHECK_TEXT) -> dict[str, Any]:
    """Tokenization and logits of the GGUF at `path` against our tokenizer and model; raises
    ExportError when they disagree, returns the figures otherwise."""
    import numpy as np
    import torch

    from aifactory.export.source import load_weights
    from aifactory.model.llama import Transformer

    tokenizer = source.tokenizer()
    ids = ([tokenizer.bos_id] if tokenizer.info.add_bos else []) + tokenizer.encode(text)
    model = Transformer(source.config)
    model.load_state_dict(load_weights(source))
    with torch.no_grad():
        ours = model.eval()(torch.tensor([ids]))[0].numpy()
    llm = load(path, context=max(64, len(ids) + 8), logits_all=True, type_k=0, type_v=0)
    try:
        theirs_ids = llm.tokenize(text.encode(), add_bos=tokenizer.info.add_bos, special=False)
        if theirs_ids != ids:
            raise ExportError(f"{path}: llama.cpp tokenizes the check text differently from our tokenizer")
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[: llm.n_tokens])
    finally:
        llm.close()
    difference = float(np.abs(ours - theirs).max() / max(1e-6, float(np.abs(ours).max())))
    agreement = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    if difference > TOLERANCE[kind] or agreement < (1.0 if kind == "f32" else 0.9):
        raise ExportError(
            f"{path}: llama.cpp's logits differ from the model's (relative difference {difference:.2g}, "
            f"best token agrees at {agreement:.0%} of {len(ids)} positions)"
        )
    return {"tokens": len(ids), "relative_logit_difference": difference, "argmax_agreement": agreement}
