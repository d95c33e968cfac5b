"""Benchmark of one full evaluation (evaluate/suite.py) against the model's own cost for the same work.

Setup: a temporary SQLite factory with real text (the LibreOffice help pages of tests/dataset/corpus,
English and Japanese), its SentencePiece tokenizer (2,000 pieces) and dataset, and a `small` model
(8 layers, width 512; random weights: speed does not depend on what they learned), CPU, 2 threads.

(a) eval_seconds: `suite.evaluate` from the checkpoint's directory to the report: loading the model, the
    validation windows and documents, building the multiple-choice task, scoring it, bits per byte, the
    prompt file and the growth samples, greedy;
(b) the reference, measured in the same run on the same model: one batched forward pass over every
    scored sequence (the task's rows and the validation windows, in the same chunk sizes) plus
    KV-cached greedy decoding of as many tokens as the evaluation generates (the serving side's batched
    decode step, as many rows and steps as the evaluation's two batches: prompts and growth samples).
    eval_overhead_ratio = (a) / (b): what the suite adds over the model's arithmetic (aim <= 1.5).

`--train-seconds S` (calibration, docs/evaluation.md) instead trains the `tiny` preset for S seconds of
wall clock on the same corpus and prints the score it reaches (CALIBRATION lines), at each of --points.

    .venv/bin/python benchmarks/evaluate.py [--items 32]
    .venv/bin/python benchmarks/evaluate.py --train-seconds 180 --points 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.dataset.helpers

from tests.dataset.helpers import add_texts, real_texts

from aifactory.dataset.builder import build
from aifactory.dataset.engine import train_tokenizer
from aifactory.dataset.source import open_source
from aifactory.db import Database, migrate
from aifactory.evaluate import prompts, suite, task, validation
from aifactory.evaluate.load import load_model
from aifactory.evaluate.target import resolve
from aifactory.serve.batch import ServingModel, SlotCache, decode, prefill
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer

THREADS = 2


def make_factory(scratch: Path, size: str, items: int, **overrides: Any) -> tuple[Settings, Database]:
    values: dict[str, Any] = dict(
        data_dir=scratch / "data",
        database_url=f"sqlite:///{scratch}/factory.db",
        auto_tune=False,
        model_size=size,
        train_vocab_size=2000,
        tokenizer_min_corpus_chars=10_000,
        dataset_val_fraction=0.2,
        train_lang_only="en,ja",
        train_seq_len=256,
        train_batch_size=8,
        pytorch_cpu_threads=THREADS,
        spm_num_threads=THREADS,
        dataset_build_workers=1,
        val_eval_batches=2,
        eval_mc_items=items,
        eval_max_tokens=32,
        eval_growth_tokens=32,
        eval_save_to_db=False,
    )
    settings = Settings(_env_file=None, **{**values, **overrides})
    db = Database(settings.resolved_database_url())
    migrate.upgrade(db)
    add_texts(db, list(real_texts("en")), "en")
    add_texts(db, list(real_texts("ja")), "ja", first=10_000)
    train_tokenizer(settings, db, 1)
    build(settings, db)
    return settings, db


def new_trainer(settings: Settings, db: Database) -> tuple[Trainer, Any]:
    source = open_source(settings, db)
    return Trainer.create(settings, source, setup_runtime(settings, "cpu"), None), source


def save(trainer: Trainer, settings: Settings) -> None:
    weights, meta, _ = trainer.checkpoint_payload()
    CheckpointStore(checkpoint_dir(settings)).save(weights, meta, None, pointers=("latest", "best"))


@torch.no_grad()
def reference_seconds(settings: Settings, db: Database, report: dict[str, Any]) -> float:
    """The model's own cost: one batched forward over every scored sequence + KV-cached decoding."""
    target = resolve(settings, "latest")
    model = load_model(target, torch.device("cpu"))
    seq_len = min(model.config.max_seq_len, int(target.meta["training"]["seq_len"]))
    data = validation.load(settings, db, target.meta["tokenizer_hash"], seq_len)
    rows = task.sequences(task.build(data.documents, data.version, settings.eval_mc_items))
    started = time.perf_counter()
    for start in range(0, rows.size(0), task.ROWS):
        model(rows[start : start + task.ROWS])
    for start in range(0, data.windows.size(0), validation.BPB_BATCH):
        model(data.windows[start : start + validation.BPB_BATCH, :-1])
    serving = ServingModel(model)
    batches = ((len(prompts.load(settings)), settings.eval_max_tokens),
               (len(prompts.GROWTH_PROMPTS), settings.eval_growth_tokens))  # fmt: skip
    for rows_count, steps in batches:
        cache = SlotCache(model.config, rows_count, torch.device("cpu"), torch.float32)
        for row in range(rows_count):
            prefill(serving, cache, row, list(range(1, 9)), 0, all_logits=False)
        tokens = torch.ones(rows_count, dtype=torch.long)
        positions = torch.full((rows_count,), 8)
        for _ in range(steps - 1):
            tokens = decode(serving, cache, tokens, positions).argmax(-1)
            positions = positions + 1
    return time.perf_counter() - started


def overhead(items: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        settings, db = make_factory(Path(scratch), "small", items)
        trainer, source = new_trainer(settings, db)
        save(trainer, settings)
        source.close()
        print(f"model: small preset, {trainer.model.parameter_count():,} parameters, {THREADS} threads")
        report = suite.evaluate(settings, db, resolve(settings, "latest"))
        reference = reference_seconds(settings, db, report)
        work = report["work"]
        print(
            f"work: {report['mc']['items']} items x {task.CHOICES} choices, {work['forward_tokens']:,} "
            f"forward tokens, {work['generated_tokens']} generated tokens"
        )
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in report["part_seconds"].items())
        print(f"evaluation {report['seconds']:.2f} s ({parts}) | model's own cost {reference:.2f} s")
        print(f"RESULT eval_overhead_ratio {report['seconds'] / reference:.3f}")
        print(f"RESULT eval_seconds {report['seconds']:.3f}")
        db.dispose()


def calibrate(train_seconds: float, points: int, items: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        settings, db = make_factory(
            Path(scratch), "tiny", items, train_seq_len=128, train_lr=3e-3, train_warmup_steps=20
        )
        trainer, source = new_trainer(settings, db)
        print(f"model: tiny preset, {trainer.model.parameter_count():,} parameters; {source.describe()}")
        trained, step_seconds = 0.0, train_seconds / points
        for point in range(points + 1):
            save(trainer, settings)
            report = suite.evaluate(settings, db, resolve(settings, "latest"))
            languages = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in report["mc"]["languages"].items())
            print(
                f"CALIBRATION train_seconds {trained:.0f} step {trainer.state.step} tokens "
                f"{trainer.state.tokens_seen:,} score {report['score']:.3f} accuracy "
                f"{report['mc']['accuracy']:.3f} ({languages}; {report['mc']['items']} items) bpb "
                f"{report['bpb']['overall']:.3f}",
                flush=True,
            )
            if point == points:
                break
            started = time.perf_counter()
            while time.perf_counter() - started < step_seconds:
                trainer.train_step()
            trained += time.perf_counter() - started
        source.close()
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=32, help="multiple-choice items per language")
    parser.add_argument("--train-seconds", type=float, help="calibrate: train this long, print scores")
    parser.add_argument("--points", type=int, default=3, help="calibration: evaluations along the way")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.train_seconds:
        calibrate(args.train_seconds, args.points, max(args.items, 128))
    else:
        overhead(args.items)


if __name__ == "__main__":
    main()
