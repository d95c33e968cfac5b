"""The GGUF export in llama.cpp itself (through llama-cpp-python): same logits, same greedy tokens, same
token ids as our tokenizer, the end of a turn as end-of-generation, and Q8_0 close to F32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import pytest
import torch

from aifactory.dataset.tokenizer import Tokenizer
from aifactory.export import llamacpp, tasks, template
from aifactory.export.gguf_file import interleave_rotary
from aifactory.export.source import load_weights, resolve
from aifactory.model.llama import Transformer, rotary_tables
from tests.export.models import CHAT, SAMPLE_EN, SAMPLE_JA, serving_prompt


def load_llama(path: Path) -> Any:
    # An F32 key/value cache (llama.cpp's default is F16), so that F32 weights mean F32 arithmetic.
    return llamacpp.load(path, logits_all=True, type_k=0, type_v=0)


@pytest.fixture(scope="module")
def exported(factory: tuple[Path, Tokenizer], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aifactory.settings import Settings

    source = resolve(Settings(_env_file=None, data_dir=factory[0]))
    directory = tmp_path_factory.mktemp("gguf")
    files = {kind: directory / f"model-{kind}.gguf" for kind in ("f32", "q8_0")}
    for kind, path in files.items():
        tasks.gguf(source, path, kind)
    ours = Transformer(source.config)
    ours.load_state_dict(load_weights(source))
    return {"files": files, "ours": ours.eval(), "tokenizer": factory[1], "f32": load_llama(files["f32"])}


def llama_logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: llm.n_tokens])


def our_logits(model: Transformer, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].numpy()


def test_rotary_permutation_turns_half_split_into_interleaved_pairs() -> None:
    """Scores q.k with our half-split rotary equal llama.cpp's interleaved rotary on permuted weights."""
    heads, head_dim, width, positions = 2, 8, 16, 5
    generator = torch.Generator().manual_seed(0)
    wq = torch.randn(heads * head_dim, width, generator=generator)
    x = torch.randn(positions, width, generator=generator)
    cos, sin = rotary_tables(head_dim, positions, 10000.0)

    def half_split(v: torch.Tensor) -> torch.Tensor:
        a, b = v[..., : head_dim // 2], v[..., head_dim // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def interleaved(v: torch.Tensor) -> torch.Tensor:
        a, b = v[..., 0::2], v[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    q = (x @ wq.T).view(positions, heads, head_dim).transpose(0, 1)
    permuted = torch.from_numpy(interleave_rotary(wq.numpy(), heads))
    p = (x @ permuted.T).view(positions, heads, head_dim).transpose(0, 1)
    ours = half_split(q) @ half_split(q).transpose(1, 2)
    theirs = interleaved(p) @ interleaved(p).transpose(1, 2)
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert not torch.allclose(ours, interleaved(q) @ interleaved(q).transpose(1, 2), atol=1e-2)


def test_metadata_carries_vocabulary_specials_and_template(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    reader = gguf.GGUFReader(exported["files"]["f32"])

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("tokenizer.ggml.model") == "llama"
    assert value("tokenizer.ggml.bos_token_id") == tokenizer.bos_id
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.eos_id
    assert value("tokenizer.ggml.padding_token_id") == tokenizer.pad_id
    assert value("tokenizer.ggml.eot_token_id") == tokenizer.special_ids[template.END]
    assert value("tokenizer.ggml.add_bos_token") is True and value("tokenizer.ggml.add_space_prefix") is False
    assert value("tokenizer.chat_template") == template.EXPORT_CHAT_TEMPLATE
    types = value("tokenizer.ggml.token_type")
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == tokenizer.vocab_size
    assert {tokens[i] for i, t in enumerate(types) if t == 3} == {
        "<s>",
        "</s>",
        "<pad>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|end|>",
    }
    assert [tokens[i] for i, t in enumerate(types) if t == 4] == ["\n"]
    assert sum(t == 6 for t in types) == 256 and all(
        tokens[i].startswith("<0x") for i, t in enumerate(types) if t == 6
    )
    assert value("llama.rope.dimension_count") == 16 and value("llama.attention.head_count_kv") == 2


def test_f32_logits_match_our_model(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    for text in (SAMPLE_EN[1], SAMPLE_JA[1]):
        ids = [tokenizer.bos_id, *tokenizer.encode(text)[:100]]
        ours, theirs = our_logits(exported["ours"], ids), llama_logits(exported["f32"], ids)
        assert np.abs(ours - theirs).max() < 1e-4, np.abs(ours - theirs).max()
        assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.parametrize("language", ["en", "ja"])
def test_llamacpp_tokenizes_as_our_tokenizer(exported: dict[str, Any], language: str) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    llm = exported["f32"]
    for text in SAMPLE_EN if language == "en" else SAMPLE_JA:
        ours = [tokenizer.bos_id, *tokenizer.encode(text)]
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ours
        assert llm.detokenize(ours[1:]).decode() == tokenizer.decode(ours)


def test_greedy_generation_matches_our_model_and_stops_at_the_end_of_a_turn(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    llm = exported["f32"]
    prompt = serving_prompt(tokenizer, CHAT)
    ids, ours = list(prompt), []
    for _ in range(16):
        ours.append(int(our_logits(exported["ours"], ids)[-1].argmax()))
        ids.append(ours[-1])
    llm.reset()
    theirs = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if len(theirs) == 16:
            break
        theirs.append(int(token))
    assert theirs == ours
    end = tokenizer.special_ids[template.END]
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), end)
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tokenizer.eos_id)


def test_chat_template_in_llamacpp_gives_the_serving_prompt_with_one_bos(exported: dict[str, Any]) -> None:
    """llama-cpp-python renders tokenizer.chat_template and adds BOS from add_bos_token: once."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tokenizer: Tokenizer = exported["tokenizer"]
    llm = exported["f32"]
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="</s>", bos_token="<s>"
    )
    rendered = formatter(messages=CHAT)
    ids = llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
    assert ids == serving_prompt(tokenizer, CHAT)


def test_q8_0_loads_and_stays_close(exported: dict[str, Any]) -> None:
    tokenizer: Tokenizer = exported["tokenizer"]
    files = exported["files"]
    assert files["q8_0"].stat().st_size < 0.5 * files["f32"].stat().st_size
    q8 = load_llama(files["q8_0"])
    ids = [tokenizer.bos_id, *tokenizer.encode(SAMPLE_EN[2])[:100]]
    ours, theirs = our_logits(exported["ours"], ids), llama_logits(q8, ids)
    assert np.abs(ours - theirs).max() < 0.25
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.9


def test_untied_output_layer_is_written_and_used(
    tmp_path: Path, factory: tuple[Path, Tokenizer], make_settings: Any
) -> None:
    from aifactory.train.checkpoint import CheckpointStore
    from tests.export.models import save_checkpoint, tiny_config

    tokenizer = factory[1]
    torch.manual_seed(3)
    model = Transformer(tiny_config(tokenizer.vocab_size, tied=False)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)  # decisive logits from random weights
    data_dir = tmp_path / "data"
    save_checkpoint(CheckpointStore(data_dir / "checkpoints"), model, tokenizer.hash, step=5)
    source = resolve(make_settings(data_dir=data_dir), tokenizer=tokenizer.directory)
    tasks.gguf(source, tmp_path / "untied.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "untied.gguf")
    assert "output.weight" in {tensor.name for tensor in reader.tensors}
    ids = [tokenizer.bos_id, *tokenizer.encode(SAMPLE_EN[3])[:60]]
    ours, theirs = our_logits(model, ids), llama_logits(load_llama(tmp_path / "untied.gguf"), ids)
    assert np.abs(ours - theirs).max() < 2e-5 * np.abs(ours).max(), np.abs(ours - theirs).max()
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_check_finds_a_gguf_whose_rotary_layout_is_wrong(exported: dict[str, Any], tmp_path: Path) -> None:
    """`export gguf --check` passes the real export and catches one written without the permutation."""
    from aifactory.export import ExportError, gguf_file
    from aifactory.export.llamacpp import check_gguf
    from aifactory.settings import Settings

    source = resolve(Settings(_env_file=None, data_dir=exported["tokenizer"].directory.parents[1]))
    figures = check_gguf(source, exported["files"]["q8_0"], "q8_0")
    assert figures["argmax_agreement"] >= 0.9
    assert check_gguf(source, exported["files"]["f32"], "f32")["relative_logit_difference"] < 1e-4
    original = gguf_file.interleave_rotary
    gguf_file.interleave_rotary = lambda weight, heads: weight  # the classic export bug
    try:
        tasks.gguf(source, tmp_path / "broken.gguf", "f32")
    finally:
        gguf_file.interleave_rotary = original
    with pytest.raises(ExportError, match="logits differ"):
        check_gguf(source, tmp_path / "broken.gguf", "f32")
