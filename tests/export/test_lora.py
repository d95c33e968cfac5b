"""LoRA on an existing base: settings from the machine, the allowed corpus only, training that lowers the
held-out loss, a merge, and a merged GGUF that llama.cpp loads and computes exactly as transformers does.

The bases are tiny random Llama and Qwen2 models built with transformers and saved to disk, as a hub
download would be (the hub cannot be reached here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db import Database, migrate
from aifactory.db.schema import document_removals
from aifactory.export import ExportError, ExportNotFound, llamacpp
from aifactory.export.lora import GIB, LoraOptions, check_base, choose_plan, corpus_documents, finetune
from tests.dataset.helpers import add_texts
from tests.export.models import SAMPLE_EN, SAMPLE_JA, llama_base, qwen2_base, training_texts
from tests.processes import aifactory

MODEL = dict(parameters=500_000_000, layers=24, hidden=896, vocab=151_936, context=32768, cores=16)


def test_plan_on_a_big_gpu_uses_bf16_long_sequences_and_large_batches() -> None:
    plan = choose_plan(device="cuda", bf16=True, free_bytes=80 * GIB, **MODEL)
    assert (plan.precision, plan.seq_len, plan.gradient_checkpointing) == ("bf16", 1024, False)
    assert 8 <= plan.batch_size <= 32 and plan.batch_size * plan.seq_len * plan.grad_accum >= 16384


def test_plan_on_a_small_gpu_checkpoints_activations_and_uses_fp16_without_bf16() -> None:
    plan = choose_plan(device="cuda", bf16=False, free_bytes=3 * GIB, **MODEL)
    assert plan.precision == "fp16" and plan.gradient_checkpointing and plan.batch_size >= 1


def test_plan_on_a_cpu_with_little_memory_is_the_originals_low_memory_setting() -> None:
    plan = choose_plan(device="cpu", bf16=False, free_bytes=3 * GIB, **{**MODEL, "parameters": 100_000_000})
    assert plan.precision == "fp32" and plan.batch_size == 1 and plan.seq_len <= 256 and plan.grad_accum >= 2
    assert "low-memory" in plan.reason


def test_plan_keeps_what_the_user_set() -> None:
    plan = choose_plan(device="cpu", bf16=False, free_bytes=24 * GIB, seq_len=128, batch_size=3, **MODEL)
    assert (plan.seq_len, plan.batch_size, plan.precision) == (128, 3, "fp32")


def test_a_base_of_another_family_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ExportError, match="supported families: llama, qwen2"):
        check_base(tmp_path)
    with pytest.raises(ExportNotFound, match="not a local directory"):
        check_base(tmp_path / "Qwen" / "Qwen2.5-0.5B")


def test_the_corpus_is_what_may_be_trained_on(db: Database, make_settings: Any) -> None:
    allowed = add_texts(db, list(SAMPLE_EN[:4]), "en")
    blocked = add_texts(db, [SAMPLE_EN[5]], "en", first=10, allowed=False)
    japanese = add_texts(db, [SAMPLE_JA[0]], "ja", first=20)
    with db.begin() as conn:  # a page replaced by its newer version is not trained on
        conn.execute(document_removals.insert().values(doc_id=allowed[0], url="x", removed_at=0.0))
    settings = make_settings(database_url=db.url, train_lang_only="en", min_train_chars=10)
    texts = [text for _, text in corpus_documents(settings, 10_000_000)]
    assert texts == list(SAMPLE_EN[1:4])
    assert blocked and japanese
    assert sum(map(len, (t for _, t in corpus_documents(settings, 1000)))) == 1000


def merged_matches_llamacpp(out: Path) -> None:
    """The merged model in transformers and its GGUF in llama.cpp: same tokens, same logits."""
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "merged")
    llm = llamacpp.load(out / "merged-f32.gguf", logits_all=True, type_k=0, type_v=0)
    try:
        for text in (SAMPLE_EN[6][:400], SAMPLE_JA[3][:200]):
            ids = tokenizer(text).input_ids
            assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids
            llm.reset()
            llm.eval(ids)
            theirs = np.array(llm.scores[: llm.n_tokens])
            with torch.no_grad():
                ours = model(torch.tensor([ids])).logits[0].numpy()
            assert np.abs(ours - theirs).max() < 1e-4 * np.abs(ours).max()
    finally:
        llm.close()


def test_lora_on_a_llama_base_trains_on_the_corpus_merges_and_loads_in_llamacpp(
    factory: tuple[Path, Tokenizer], make_settings: Any, tmp_path: Path
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'corpus.db'}")
    migrate.upgrade(db)
    add_texts(db, [text for _, text in training_texts()[:60]], "en")
    add_texts(db, [SAMPLE_EN[7]], "en", first=500, allowed=False)  # opted out: must not be read
    settings = make_settings(database_url=db.url, train_lang_only="en,ja")
    base = llama_base(tmp_path / "llama", factory[1])
    options = LoraOptions.from_settings(
        settings, base, steps=25, rank=8, learning_rate=3e-3, seq_len=64, batch_size=4, gguf_type="f32"
    )
    reports: list[tuple[float, str]] = []
    result = finetune(settings, options, tmp_path / "out", progress=lambda f, m: reports.append((f, m)))
    db.dispose()
    assert result["held_out_loss_after"] < result["held_out_loss_before"] - 0.1
    assert result["data"].startswith("the allowed corpus (60 documents")
    assert [f for f, _ in reports] == sorted(f for f, _ in reports) and reports[-1][0] == 1.0
    assert any(m.startswith("step 25/25 loss") for _, m in reports)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "merged", "merged-f32.gguf", "training.json"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "training.json").read_text())["plan"]["seq_len"] == 64
    assert not list(tmp_path.glob(".out.partial*"))
    merged_matches_llamacpp(out)


def test_lora_on_a_qwen2_base_from_the_command_line(tmp_path: Path) -> None:
    base = qwen2_base(tmp_path / "qwen2")
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(text for _, text in training_texts()[:50]))
    run = aifactory(
        "finetune", "lora", "--base", str(base), "--output", str(tmp_path / "out"), "--text-file", str(text),
        "--steps", "20", "--lr", "3e-3", "--seq-len", "64", "--batch-size", "4", "--type", "f32",
        cwd=tmp_path, timeout=240, DATA_DIR=tmp_path / "data", LORA_RANK=8,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "held-out loss" in run.stdout and "plan: cpu" in run.stdout
    assert "] 100%" in run.stderr  # the progress bar (a line every 10 s and at the end off a terminal)
    summary = json.loads((tmp_path / "out" / "training.json").read_text())
    assert summary["family"] == "qwen2" and summary["held_out_loss_after"] < summary["held_out_loss_before"]
    merged_matches_llamacpp(tmp_path / "out")
    again = aifactory(
        "finetune", "lora", "--base", str(base), "--output", str(tmp_path / "out"), "--text-file", str(text),
        cwd=tmp_path, timeout=120, DATA_DIR=tmp_path / "data",
    )  # fmt: skip
    assert again.returncode == 1 and "already exists" in again.stderr


def test_a_base_whose_tokenizer_llamacpp_would_split_differently_is_refused_before_training(
    tmp_path: Path,
) -> None:
    base = qwen2_base(tmp_path / "qwen2")
    data = json.loads((base / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (base / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match="pre-tokenizer regex is not one llama"):
        check_base(base)
