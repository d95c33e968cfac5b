"""Our model is Hugging Face's LlamaForCausalLM: same logits, loss and gradients on the same weights.

This pins the architecture (RMSNorm, half-split RoPE, GQA, SwiGLU, tied/untied head) and the weight
mapping that export relies on. transformers models are built from a config, never downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from aifactory.model.config import ModelConfig
from aifactory.model.hf import from_hf_state_dict, hf_config, to_hf_state_dict
from aifactory.model.llama import Transformer

SHAPES = {
    "tied, grouped-query": dict(n_head=4, n_kv_head=2, tie_embeddings=True),
    "untied, multi-head": dict(n_head=4, n_kv_head=4, tie_embeddings=False),
    "multi-query": dict(n_head=4, n_kv_head=1, tie_embeddings=True),
}


def make_pair(**shape: object) -> tuple[ModelConfig, Transformer, torch.nn.Module]:
    config = ModelConfig(vocab_size=101, n_layer=2, n_embd=64, intermediate_size=96, max_seq_len=64, **shape)
    torch.manual_seed(0)
    ours = Transformer(config)
    with torch.no_grad():  # norm gains away from 1, so a misplaced norm weight would show
        for name, param in ours.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    fields = {k: v for k, v in hf_config(config).items() if k not in ("architectures", "model_type")}
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields))
    missing, unexpected = theirs.load_state_dict(to_hf_state_dict(ours.state_dict(), config), strict=False)
    assert unexpected == [] and missing == (["lm_head.weight"] if config.tie_embeddings else [])
    return config, ours, theirs


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_logits_equal_transformers_llama(shape: dict) -> None:
    _, ours, theirs = make_pair(**shape)
    idx = torch.randint(0, 101, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(idx), theirs.eval()(idx).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_training_loss_and_gradients_equal_transformers_llama(shape: dict) -> None:
    config, ours, theirs = make_pair(**shape)
    idx = torch.randint(0, 101, (2, 33), generator=torch.Generator().manual_seed(2))
    # HF shifts the labels itself: 33 tokens in, 32 next-token targets, as ours with 32 in and 32 out.
    reference = theirs(input_ids=idx, labels=idx).loss
    loss = ours(idx[:, :-1], idx[:, 1:])  # with gradients: the fused chunked loss
    with torch.no_grad():
        plain = ours(idx[:, :-1], idx[:, 1:])  # without: logits then cross-entropy
    assert torch.allclose(loss, reference, atol=1e-5) and torch.allclose(plain, reference, atol=1e-5)
    loss.backward()
    reference.backward()
    ours_grads = to_hf_state_dict({n: p.grad for n, p in ours.named_parameters()}, config)
    theirs_grads = dict(theirs.named_parameters())
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, theirs_grads[name].grad, atol=1e-6), name


def test_state_dict_round_trips_through_hf_names() -> None:
    config, ours, _ = make_pair(**SHAPES["tied, grouped-query"])
    state = ours.state_dict()
    back = from_hf_state_dict(to_hf_state_dict(state, config), config)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[name], state[name]) for name in state)


def test_exported_config_and_weights_load_with_from_pretrained(tmp_path: Path) -> None:
    """config.json as we write it, plus safetensors weights, is a model transformers loads as it is."""
    config, ours, _ = make_pair(**SHAPES["untied, multi-head"])
    (tmp_path / "config.json").write_text(json.dumps(hf_config(config, bos_token_id=1, eos_token_id=2)))
    save_file(to_hf_state_dict(ours.state_dict(), config), tmp_path / "model.safetensors", {"format": "pt"})
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, 101, (1, 20))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(idx), loaded.eval()(idx).logits, atol=1e-5)
