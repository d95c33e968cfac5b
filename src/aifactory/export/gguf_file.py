"""A GGUF file written directly with the `gguf` package: no llama.cpp checkout, no converter script.

Input is architecture-neutral: a Hugging Face config.json (as a dict), the weights under HF's names and
a GGUFVocab. Two architectures, the ones whose HF weights map one-to-one onto llama.cpp's:
- `llama` (our models, Llama and its relatives). llama.cpp rotates interleaved channel pairs (2i, 2i+1)
  where HF rotates halves (i, i + head_dim/2), so the rows of Wq (with the query heads) and Wk (with the
  key/value heads) are permuted per head, as llama.cpp's own converter does; V and O are not touched.
  Without it the model loads, runs, and produces garbage (docs/model.md, serving.md §3.4).
- `qwen2`: half-split rotary in llama.cpp too (NEOX), so no permutation; q/k/v have biases.

Tensors are converted and written one at a time (the header first lists their shapes and types), so
memory stays at one tensor beyond the weights themselves. Types: `f32`, `f16` (2-D weights; norms and
biases stay F32, as llama.cpp's converter does), `q8_0` (2-D weights in blocks of 32 with one scale;
a weight whose rows are not a multiple of 32 long stays F16).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aifactory.export import ExportError
from aifactory.export.staging import check_free, staged_file
from aifactory.export.vocab import GGUFVocab

if TYPE_CHECKING:
    import torch

TYPES = ("f32", "f16", "q8_0")
SUPPORTED_FAMILIES = ("llama", "qwen2")  # HF model_type values, which are also the GGUF architectures
Progress = Callable[[float, str], None]

_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's tensor name for an HF weight name (None for buffers that are not weights)."""
    if hf_name in _TOP:
        return _TOP[hf_name]
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER:
        return f"blk.{parts[2]}.{_LAYER[parts[3]]}"
    raise ExportError(f"weight {hf_name!r} has no place in a llama/qwen2 GGUF")


def interleave_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Half-split rotary rows -> llama.cpp's interleaved pairs, per head (rows of W, or a bias)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def rope_theta(config: dict[str, Any]) -> float:
    """The rotary base of an HF config; other rotary scalings than the default are refused."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or rope.get("rope_type") or "default"
    if kind != "default":
        raise ExportError(f"rotary scaling {kind!r} cannot be written as GGUF here (only the default rotary)")
    return float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)


def _hparams(writer: Any, config: dict[str, Any], vocab_size: int) -> None:
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)  # llama.cpp refuses n_rot != head_dim for these archs
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(vocab_size)


def _target_type(name: str, shape: tuple[int, ...], kind: str) -> Any:
    from gguf import GGMLQuantizationType as Q

    if len(shape) < 2 or kind == "f32" or not name.endswith(".weight"):
        return Q.F32
    if kind == "q8_0" and shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def _encode(array: np.ndarray, qtype: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if qtype == Q.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(array, dtype=np.float16)
    return quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)


def write_gguf(
    out: Path,
    *,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    vocab: GGUFVocab,
    kind: str = "f16",
    name: str = "",
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write `out` (which must not exist) for an HF `config` and HF-named `weights`; returns a summary."""
    import gguf

    if kind not in TYPES:
        raise ExportError(f"unknown GGUF type {kind!r}: use one of {', '.join(TYPES)}")
    arch = str(config.get("model_type", ""))
    if arch not in SUPPORTED_FAMILIES:
        raise ExportError(
            f"model family {arch or 'unknown'!r} cannot be written as GGUF here; supported families: "
            f"{', '.join(SUPPORTED_FAMILIES)}"
        )
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tied = bool(config.get("tie_word_embeddings", False))
    vocab_size = int(weights["model.embed_tokens.weight"].shape[0])
    if len(vocab.tokens) != vocab_size:
        raise ExportError(f"the vocabulary has {len(vocab.tokens)} tokens but the model {vocab_size}")

    plan: list[tuple[str, str, Any, tuple[int, ...]]] = []  # (hf name, gguf name, type, shape)
    for hf_name, tensor in weights.items():
        target = gguf_name(hf_name)
        if target is None or (tied and target == "output.weight"):
            continue  # tied: llama.cpp reuses token_embd for the output
        shape = tuple(int(n) for n in tensor.shape)
        plan.append((hf_name, target, _target_type(target, shape, kind), shape))
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[kind]

    with staged_file(out) as staging:
        writer = gguf.GGUFWriter(None, arch)
        writer.add_type("model")
        writer.add_name(name or arch)
        for key, value in (metadata or {}).items():
            writer.add_string(key, value)
        _hparams(writer, config, vocab_size)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.write(writer)
        for _, target, qtype, shape in plan:
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                itemsize = 4 if qtype == gguf.GGMLQuantizationType.F32 else 2
                dtype = np.float32 if itemsize == 4 else np.float16
                writer.add_tensor_info(target, shape, np.dtype(dtype), int(np.prod(shape)) * itemsize)
            else:
                byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
                writer.add_tensor_info(
                    target, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype
                )
        writer.write_header_to_file(path=staging)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(int(np.prod(shape)) for *_, shape in plan)
        done = 0
        try:
            for hf_name, target, qtype, shape in plan:
                array = weights[hf_name].detach().float().cpu().numpy()
                if arch == "llama" and ".attn_q." in target:
                    array = interleave_rotary(array, heads)
                elif arch == "llama" and ".attn_k." in target:
                    array = interleave_rotary(array, kv_heads)
                writer.write_tensor_data(_encode(array, qtype))
                done += int(np.prod(shape))
                if progress is not None:
                    progress(done / total, f"wrote {target}")
        finally:
            writer.close()
    return {
        "path": str(out),
        "architecture": arch,
        "type": kind,
        "tensors": len(plan),
        "f16_fallbacks": sum(
            1 for *_, qtype, _ in plan if kind == "q8_0" and qtype == gguf.GGMLQuantizationType.F16
        ),
        "bytes": out.stat().st_size,
    }


def export_gguf(
    source: Any, out: Path, kind: str = "f16", progress: Progress | None = None
) -> dict[str, Any]:
    """Our model (an ExportSource) as a GGUF: its weights under HF's names, its SentencePiece
    vocabulary with <|end|> as the end-of-turn token, add_bos_token as in training, the chat template."""
    from aifactory.export import template
    from aifactory.export.source import load_weights
    from aifactory.export.vocab import from_sentencepiece
    from aifactory.model.hf import hf_config, to_hf_state_dict

    if kind not in TYPES:
        raise ExportError(f"unknown GGUF type {kind!r}: use one of {', '.join(TYPES)}")
    check_free(Path(out))  # before the weights are read
    tokenizer = source.tokenizer()
    vocab = from_sentencepiece(
        tokenizer.model_path,
        add_bos=tokenizer.info.add_bos,
        chat_template=template.export_chat_template(tokenizer.info.add_bos),
    )
    if progress is not None:
        progress(0.0, "reading the weights")
    weights = to_hf_state_dict(load_weights(source), source.config)
    config = hf_config(source.config, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
    return write_gguf(
        out,
        config=config,
        weights=weights,
        vocab=vocab,
        kind=kind,
        name=source.name,
        metadata={"general.description": f"AI Factory Engine model ({source.describe()})"},
        progress=progress,
    )
