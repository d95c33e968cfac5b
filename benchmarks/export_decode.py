"""Decode speed on the same exported weights: our engine against llama.cpp, F32 and 8-bit.

The model is MODEL_SIZE=small's shape (8 layers, 8 heads, width 512, SwiGLU 1408, tied embeddings)
over a SentencePiece vocabulary trained on the test corpus (TRAIN_VOCAB_SIZE's 16000 asked for; the
corpus may give fewer). Its weights are random: decode speed does not depend on their values. The
checkpoint is exported with `aifactory export gguf` (export/tasks.py) as F32 and as Q8_0.

- ours: the model with its KV cache (model/llama.py), greedy: the prompt in one forward, then one
  token per forward, argmax of the logits each step. For 8 bits, every Linear of it and the output head
  are int8 dynamically quantized (torch.ao quantize_dynamic, what ENABLE_CPU_QUANTIZATION does).
- llama.cpp: llama-cpp-python on the F32 / Q8_0 GGUF, the prompt in one `eval`, then one `eval([token])`
  per token and the argmax of its logits, in the same Python loop.

Both use the same threads, prompt (32 tokens) and number of generated tokens (128). llama.cpp keeps its
defaults otherwise (an F16 key/value cache). The weights are random, so the two pick different tokens
(near-uniform logits); that they compute the same logits is what tests/export/test_gguf.py checks.
They alternate in rounds in one process, so both see the same machine load; each ratio is the median
over rounds of the per-round ratio ours / llama.cpp (above 1: ours is faster).

    .venv/bin/python benchmarks/export_decode.py [--rounds 5] [--tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import lzma
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aifactory.dataset import tokenizer as tokenizers
from aifactory.export import tasks
from aifactory.export.llamacpp import cpu_has_amx, load
from aifactory.export.source import resolve
from aifactory.model.config import preset
from aifactory.model.llama import KVCache, Transformer
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "dataset" / "corpus"
PROMPT_TOKENS = 32


class OurDecoder:
    """Greedy decoding with the KV cache; the output head as a Linear so int8 quantization covers it."""

    def __init__(self, model: Transformer, quantize: bool) -> None:
        self.model = model
        config = model.config
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = model.embed.weight if model.lm_head is None else model.lm_head.weight
        if quantize:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(model.layers, {nn.Linear}, dtype=torch.qint8, inplace=True)
                self.head = quantize_dynamic(nn.Sequential(self.head), {nn.Linear}, dtype=torch.qint8)

    def forward(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        model = self.model
        x = model.embed(idx)
        cos, sin = model._rotary(cache.length, idx.size(1), x.dtype)
        for block in model.layers:
            x = block(x, cos, sin, cache)
        cache.advance(idx.size(1))
        return self.head(model.norm(x[:, -1]))

    @torch.inference_mode()
    def generate(self, prompt: list[int], count: int) -> tuple[list[int], float]:
        cache = KVCache(self.model.config, 1, len(prompt) + count + 1)
        logits = self.forward(torch.tensor([prompt]), cache)
        out = [int(logits.argmax())]
        started = time.perf_counter()
        for _ in range(count - 1):
            out.append(int(self.forward(torch.tensor([[out[-1]]]), cache).argmax()))
        return out, (count - 1) / (time.perf_counter() - started)


def llama_generate(llm: object, prompt: list[int], count: int) -> tuple[list[int], float]:
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(prompt)  # type: ignore[attr-defined]
    out = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _ in range(count - 1):
        llm.eval([out[-1]])  # type: ignore[attr-defined]
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))  # type: ignore[attr-defined]
    return out, (count - 1) / (time.perf_counter() - started)


def build(root: Path, vocab: int) -> tuple[Settings, Transformer, list[int]]:
    texts = []
    for language in ("en", "ja"):
        data = lzma.decompress((CORPUS / f"libreoffice-help-{language}.txt.xz").read_bytes()).decode()
        texts += [(language, page) for page in data.split("\n\f\n")]
    tokenizer = tokenizers.train(root, 1, texts, vocab_size=vocab, model_type="bpe", threads=2)
    config = preset("small", tokenizer.vocab_size, max_seq_len=512)
    torch.manual_seed(0)
    model = Transformer(config).eval()
    meta = {"step": 1, "model": config.to_dict(), "tokenizer_hash": tokenizer.hash, "state": {}}
    CheckpointStore(root / "checkpoints").save(model.state_dict(), meta, None, ("latest",))
    prompt = [tokenizer.bos_id, *tokenizer.encode(texts[3][1])][:PROMPT_TOKENS]
    return Settings(_env_file=None, data_dir=root), model, prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=16000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings, model, prompt = build(root / "data", args.vocab)
        source = resolve(settings, checkpoint="latest")
        files = {kind: root / f"model-{kind}.gguf" for kind in ("f32", "q8_0")}
        for kind, path in files.items():
            tasks.gguf(source, path, kind)
        print(
            f"model: {model.config.short()}, {model.parameter_count():,} parameters; prompt {len(prompt)} "
            f"tokens, {args.tokens} generated, {args.threads} threads, {args.rounds} rounds"
        )
        if cpu_has_amx():
            print("note: AMX CPU: llama.cpp runs without its extra buffer types (see export/llamacpp.py)")
        results = {}
        for kind in ("f32", "q8_0"):
            fresh = Transformer(model.config)
            fresh.load_state_dict(model.state_dict())
            ours = OurDecoder(fresh.eval(), quantize=kind == "q8_0")
            llm = load(files[kind], threads=args.threads, context=len(prompt) + args.tokens + 8)
            ours.generate(prompt, 8)  # warm up both
            llama_generate(llm, prompt, 8)
            ratios, our_rates, their_rates = [], [], []
            for _ in range(args.rounds):
                _, our_rate = ours.generate(prompt, args.tokens)
                _, their_rate = llama_generate(llm, prompt, args.tokens)
                ratios.append(our_rate / their_rate)
                our_rates.append(our_rate)
                their_rates.append(their_rate)
            llm.close()
            results[kind] = statistics.median(ratios)
            label = "int8 dynamic" if kind == "q8_0" else "fp32"
            print(
                f"{kind:>5}: ours ({label}) {statistics.median(our_rates):7.1f} tok/s, llama.cpp "
                f"{statistics.median(their_rates):7.1f} tok/s, ratio {results[kind]:.3f} "
                f"(ratio of medians {statistics.median(our_rates) / statistics.median(their_rates):.3f}); "
                f"GGUF {files[kind].stat().st_size / 1e6:.0f} MB"
            )
    print(f"RESULT decode_vs_llamacpp_f32_ratio {results['f32']:.3f}")
    print(f"RESULT decode_vs_llamacpp_q8_ratio {results['q8_0']:.3f}")


if __name__ == "__main__":
    main()
