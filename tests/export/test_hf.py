"""The Hugging Face export is a model transformers loads as it is: same logits, same token ids, same chat
prompt, same stopping as serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from aifactory.dataset.tokenizer import Tokenizer
from aifactory.export import tasks
from aifactory.export.source import load_weights, resolve
from aifactory.model.llama import Transformer
from tests.export.models import CHAT, SAMPLE_EN, SAMPLE_JA, serving_prompt


@pytest.fixture(scope="module")
def exported(factory: tuple[Path, Tokenizer], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aifactory.settings import Settings

    settings = Settings(_env_file=None, data_dir=factory[0])
    source = resolve(settings, checkpoint="best")
    out = tmp_path_factory.mktemp("hf") / "model"
    tasks.hf(source, out)
    ours = Transformer(source.config)
    ours.load_state_dict(load_weights(source))
    return {
        "dir": out,
        "ours": ours.eval(),
        "tokenizer": factory[1],
        "model": transformers.AutoModelForCausalLM.from_pretrained(out).eval(),
        "hf_tokenizer": transformers.AutoTokenizer.from_pretrained(out),
    }


def test_directory_holds_what_transformers_and_llamacpp_converters_read(exported: dict[str, Any]) -> None:
    names = {path.name for path in exported["dir"].iterdir()}
    assert names >= {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    }
    config = json.loads((exported["dir"] / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in config  # no custom code
    assert type(exported["model"]).__name__ == "LlamaForCausalLM"
    assert not list(exported["dir"].parent.glob(".*partial*"))


def test_logits_equal_our_model_in_fp32(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(SAMPLE_EN[0])[:120]]])
    with torch.no_grad():
        ours = exported["ours"](ids)
        theirs = exported["model"](ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()


@pytest.mark.parametrize("language", ["en", "ja"])
def test_auto_tokenizer_gives_our_ids_with_bos(exported: dict[str, Any], language: str) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    hf = exported["hf_tokenizer"]
    samples = SAMPLE_EN if language == "en" else SAMPLE_JA
    assert len(samples) >= 20
    for text in samples:
        ours = [tokenizer.bos_id, *tokenizer.encode(text)]  # add_bos: documents were trained as <s> text
        assert hf(text).input_ids == ours
        assert hf.decode(ours, skip_special_tokens=True) == tokenizer.decode(ours)


def test_text_that_looks_like_a_marker_is_text_only_when_asked(exported: dict[str, Any]) -> None:
    """transformers parses special tokens in text by default (that is how chat templates work); with
    split_special_tokens it encodes them as text, as our tokenizer always does."""
    tokenizer: Tokenizer = exported["tokenizer"]
    text = "a page quoting <|user|> in its text"
    hf = exported["hf_tokenizer"]
    assert hf(text, split_special_tokens=True).input_ids == [tokenizer.bos_id, *tokenizer.encode(text)]


def test_chat_template_gives_the_serving_prompt_with_one_bos(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    hf = exported["hf_tokenizer"]
    ids = hf.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert ids == serving_prompt(tokenizer, CHAT)
    assert ids.count(tokenizer.bos_id) == 1
    text = hf.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert hf(text, add_special_tokens=False).input_ids == ids  # the rendered text holds BOS already


def test_generation_stops_at_the_end_of_a_turn_or_document(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    generation = json.loads((exported["dir"] / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.special_ids["<|end|>"], tokenizer.eos_id]
    assert generation["bos_token_id"] == tokenizer.bos_id and generation["pad_token_id"] == tokenizer.pad_id
    config = json.loads((exported["dir"] / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["add_eos_token"] is False
    assert exported["model"].generation_config.eos_token_id == generation["eos_token_id"]


def test_greedy_generation_matches_our_model(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    prompt = serving_prompt(tokenizer, CHAT)
    model = exported["model"]
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=12,
        do_sample=False,
        repetition_penalty=1.0,  # the exported default (1.1) applies to greedy decoding too
        eos_token_id=[],
        pad_token_id=tokenizer.pad_id,
    )[0, len(prompt) :].tolist()
    ids, ours = list(prompt), []
    with torch.no_grad():
        for _ in range(12):
            ours.append(int(exported["ours"](torch.tensor([ids]))[0, -1].argmax()))
            ids.append(ours[-1])
    assert out == ours
