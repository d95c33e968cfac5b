"""Our weights under Hugging Face LlamaForCausalLM's names, and its config.json for our shape.

The mapping is one-to-one except that our fused projections are split: `attn.qkv` rows are
[q | k | v] (n_head, n_kv_head, n_kv_head heads of head_dim rows) and `mlp.gate_up` rows are
[gate | up]. Rotary uses HF's half-split layout, so no permutation is needed for HF (GGUF's
interleaved layout needs one; that is the export's business). tests/model/test_hf_parity.py pins this
against transformers itself.
"""

from __future__ import annotations

from typing import Any

import torch

from aifactory.model.config import ModelConfig


def hf_config(
    config: ModelConfig, *, bos_token_id: int | None = None, eos_token_id: int | None = None
) -> dict:
    """config.json for LlamaForCausalLM: the v4 keys (read by every version and by llama.cpp's
    converter) plus v5's `rope_parameters`."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "hidden_act": "silu",
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": True,
    }


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> HF names (contiguous tensors; no lm_head when embeddings are tied)."""
    q_rows, kv_rows = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": state["embed.weight"],
        "model.norm.weight": state["norm.weight"],
    }
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(config.n_layer):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "attn.qkv.weight"].split([q_rows, kv_rows, kv_rows])
        gate, up = state[ours + "mlp.gate_up.weight"].chunk(2)
        out |= {
            theirs + "input_layernorm.weight": state[ours + "attn_norm.weight"],
            theirs + "self_attn.q_proj.weight": q,
            theirs + "self_attn.k_proj.weight": k,
            theirs + "self_attn.v_proj.weight": v,
            theirs + "self_attn.o_proj.weight": state[ours + "attn.proj.weight"],
            theirs + "post_attention_layernorm.weight": state[ours + "mlp_norm.weight"],
            theirs + "mlp.gate_proj.weight": gate,
            theirs + "mlp.up_proj.weight": up,
            theirs + "mlp.down_proj.weight": state[ours + "mlp.down.weight"],
        }
    return {name: tensor.contiguous() for name, tensor in out.items()}


def from_hf_state_dict(hf: dict[str, Any], config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF names -> our state dict (the inverse of to_hf_state_dict)."""
    out: dict[str, torch.Tensor] = {
        "embed.weight": hf["model.embed_tokens.weight"],
        "norm.weight": hf["model.norm.weight"],
    }
    if not config.tie_embeddings:
        out["lm_head.weight"] = hf["lm_head.weight"]
    for i in range(config.n_layer):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        attn, mlp = theirs + "self_attn.", theirs + "mlp."
        out |= {
            ours + "attn_norm.weight": hf[theirs + "input_layernorm.weight"],
            ours + "attn.qkv.weight": torch.cat(
                [hf[attn + "q_proj.weight"], hf[attn + "k_proj.weight"], hf[attn + "v_proj.weight"]]
            ),
            ours + "attn.proj.weight": hf[attn + "o_proj.weight"],
            ours + "mlp_norm.weight": hf[theirs + "post_attention_layernorm.weight"],
            ours + "mlp.gate_up.weight": torch.cat(
                [hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"]]
            ),
            ours + "mlp.down.weight": hf[mlp + "down_proj.weight"],
        }
    return out
