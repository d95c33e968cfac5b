"""Which vocabulary size for Japanese + English: tokens per character, and bits per byte reached in equal
CPU time.

For each vocabulary size a tokenizer is trained on the same balanced ja+en sample (the dataset engine's
own `sample_plan` and `tokenizers.train`), and a model of the machine's default size is trained from
scratch on the same text for the same CPU time (process CPU seconds, so other load on the machine
does not shorten a run). Then, on held-out pages of each language:

- tokens per character (fewer = more text per context window and per step; the largest vocabulary
  always wins this one), and
- validation bits per byte (comparable across tokenizers: the loss per UTF-8 byte of text), which is
  what the vocabulary should be chosen by: a larger vocabulary costs a larger embedding and output
  layer, so each step is slower and each token's embedding is seen less often.

    .venv/bin/python benchmarks/tokenizer_vocab.py [--ja FILE --en FILE] [--cpu-minutes 5]

FILE holds pages separated by form-feed lines (`\\n\\f\\n`); the default is the tests' LibreOffice help
corpus (small: use real manuals for the figures in docs/tokenizer.md).
"""

from __future__ import annotations

import argparse
import lzma
import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.corpus import sample_plan
from aifactory.settings import Settings
from aifactory.train.batches import TokenArraySource
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "dataset" / "corpus"
VOCABS = (8000, 16000, 32000)


def pages(path: Path | None, language: str) -> list[str]:
    if path is None:
        data = lzma.decompress((CORPUS / f"libreoffice-help-{language}.txt.xz").read_bytes()).decode()
    else:
        data = path.read_text()
    return [page.strip() for page in re.split(r"\n+\f\n+", data) if page.strip()]


def split(texts: list[str]) -> tuple[list[str], list[str]]:
    held = max(1, len(texts) // 10)
    return texts[:-held], texts[-held:]


def stream(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> np.ndarray:
    ids = [token for text in texts for token in tokenizer.encode_document(text)]
    return np.array(ids, dtype=np.int64)


def settings_for(data_dir: Path, model: str, threads: int) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        auto_tune=False,
        model_size=model,
        train_batch_size=4,
        train_seq_len=384,
        pytorch_cpu_threads=threads,
        train_use_amp=False,
        val_eval_tokens=16 * 4 * 384,
    )


def run(vocab: int, data: dict[str, tuple[list[str], list[str]]], args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"vocab{vocab}-"))
    chars = {language: sum(map(len, train)) for language, (train, _) in data.items()}
    plan = sample_plan(chars, 20_000_000)
    sample = [
        (language, text)
        for language, (train, _) in data.items()
        for text in train
        for _ in range(max(1, round(plan[language])))
    ]
    tokenizer = tokenizers.train(work, 1, sample, vocab_size=vocab, model_type="bpe", threads=args.threads)
    per_char = {
        language: len(tokenizer.encode("\n".join(val))) / len("\n".join(val))
        for language, (_, val) in data.items()
    }
    train = np.concatenate([stream(tokenizer, texts) for texts, _ in data.values()])
    token_bytes = torch.from_numpy(tokenizer.token_bytes())
    vals = {language: stream(tokenizer, val) for language, (_, val) in data.items()}
    settings = settings_for(work, args.model, args.threads)
    source = TokenArraySource(
        train, np.concatenate(list(vals.values())), vocab_size=tokenizer.vocab_size,
        token_bytes=token_bytes, tokenizer_hash=tokenizer.hash,
    )  # fmt: skip
    trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
    budget = args.cpu_minutes * 60
    started, wall = time.process_time(), time.monotonic()
    steps = 0
    while time.process_time() - started < budget:
        trainer.train_step()
        steps += 1
    cpu = time.process_time() - started
    bpb = {}
    for language, tokens in vals.items():
        trainer.source = TokenArraySource(
            tokens[:0], tokens, vocab_size=tokenizer.vocab_size, token_bytes=token_bytes,
            tokenizer_hash=tokenizer.hash,
        )  # fmt: skip
        trainer._val = None
        bpb[language] = trainer.evaluate()[1]
    return {
        "vocab": tokenizer.vocab_size,
        "per_char": per_char,
        "steps": steps,
        "tokens": trainer.state.tokens_seen,
        "cpu_sec": cpu,
        "wall_sec": time.monotonic() - wall,
        "params": trainer.model.parameter_count(),
        "bpb": bpb,
        "mean_bpb": sum(bpb.values()) / len(bpb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ja", type=Path)
    parser.add_argument("--en", type=Path)
    parser.add_argument("--cpu-minutes", type=float, default=2.0)
    parser.add_argument("--model", default="small", help="MODEL_SIZE preset (default small: this machine's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocabs", type=int, nargs="+", default=list(VOCABS))
    args = parser.parse_args()
    torch.manual_seed(0)
    data = {"ja": split(pages(args.ja, "ja")), "en": split(pages(args.en, "en"))}
    for language, (train, val) in data.items():
        print(f"{language}: {sum(map(len, train)):,} training and {sum(map(len, val)):,} held-out characters")
    print(
        f"model {args.model}, batch 4 x 384, {args.threads} thread(s), {args.cpu_minutes:g} CPU-minutes each"
    )
    results = [run(vocab, data, args) for vocab in args.vocabs]
    print(f"{'vocab':>7} {'params':>11} {'ja tok/ch':>9} {'en tok/ch':>9} {'steps':>6} {'tokens':>9} "
          f"{'ja bpb':>7} {'en bpb':>7} {'mean':>7}")  # fmt: skip
    for r in results:
        per_char, bpb = r["per_char"], r["bpb"]
        print(
            f"{r['vocab']:>7} {r['params']:>11,} {per_char['ja']:>9.3f} {per_char['en']:>9.3f} "
            f"{r['steps']:>6} {r['tokens']:>9,} {bpb['ja']:>7.3f} {bpb['en']:>7.3f} {r['mean_bpb']:>7.3f}"
        )
    best = min(results, key=lambda r: r["mean_bpb"] if math.isfinite(r["mean_bpb"]) else math.inf)
    for r in results:
        k = f"{round(r['vocab'] / 1000)}k"
        print(f"RESULT tokens_per_char_ja_{k} {r['per_char']['ja']:.4f}")
        print(f"RESULT tokens_per_char_en_{k} {r['per_char']['en']:.4f}")
        print(f"RESULT val_bpb_{k} {r['mean_bpb']:.4f}")
    print(f"RESULT best_vocab_by_bpb {best['vocab']}")


if __name__ == "__main__":
    main()
