"""Chat tuning: the same model, the same steps, with and without conversation windows in the mix.

Data: real documents (LibreOffice's help in English and Japanese, tests/dataset/corpus), the factory's
own tokenizer and dataset built from them, and a set of short conversations in both languages
(tests/chat/helpers.py) of which the frozen validation split is held out. Two trainers start from
the same seed and take the same number of steps: one on documents only, one with CHAT_MIX_RATIO of
the windows conversations (loss on assistant tokens only). Then, on the held-out conversations:

- template adherence: the share of greedy answers that end with <|end|> within the budget and write
  no turn of their own (the chat evaluation's check, chat/evaluate.py);
- assistant-token loss, with / without;
- document validation bits per byte, with / without: what the mix costs the documents (aim <= 1.05).

    .venv/bin/python benchmarks/chat_tuning.py [--steps 300] [--ratios 0.2,0.1]

With several ratios each gets a row; the RESULT lines are for the first. It ends with
`RESULT template_adherence <v>`, `RESULT chat_loss_ratio <v>` and `RESULT doc_bpb_ratio <v>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the corpus and conversations live under tests/
from tests.chat.helpers import add_conversations, conversation_set
from tests.dataset.helpers import add_texts, real_texts

from aifactory.chat import store
from aifactory.chat.evaluate import chat_evaluation
from aifactory.chat.mix import with_chat_mix
from aifactory.dataset.builder import build
from aifactory.dataset.engine import train_tokenizer
from aifactory.dataset.source import open_source
from aifactory.db import migrate
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer

MODEL = dict(
    model_size="tiny",
    train_n_layer=4,
    train_n_head=4,
    train_n_kv_head=2,
    train_n_embd=128,
    train_batch_size=8,
    train_seq_len=128,
    train_lr=3e-3,
    train_warmup_steps=20,
    val_eval_batches=8,
    pytorch_cpu_threads=2,
)
DATA = dict(
    train_vocab_size=2000,
    tokenizer_min_corpus_chars=10_000,
    tokenizer_sample_chars=600_000,
    dataset_val_fraction=0.1,
    dataset_shard_tokens=100_000,
    spm_num_threads=2,
    train_lang_only="en,ja",
    dataset_build_workers=1,
    chat_val_fraction=0.15,
)
BUDGET = 48


def run(settings: Settings, db: Database, ratio: float, steps: int) -> tuple[Trainer, float]:
    source = with_chat_mix(settings, open_source(settings, db), ratio=ratio)
    trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
    started = time.monotonic()
    for _ in range(steps):
        trainer.train_step()
    return trainer, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ratios", default=str(Settings(_env_file=None).chat_mix_ratio))
    parser.add_argument("--conversations", type=int, default=600)
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate.upgrade(db)
        settings = Settings(
            _env_file=None, data_dir=Path(tmp) / "data", auto_tune=False, database_url=db.url, **DATA, **MODEL
        )
        en, ja = real_texts("en"), real_texts("ja")
        add_texts(db, list(en[:400]), "en")
        add_texts(db, list(ja[:150]), "ja", first=1000)
        train_tokenizer(settings, db, 1)
        build(settings, db)
        add_conversations(
            db, conversation_set(args.conversations, seed=3), val_fraction=settings.chat_val_fraction
        )
        held_out = [c.messages for c in store.load(db, split=store.VAL)]
        source = open_source(settings, db)
        tokenizer = source.tokenizer
        print(f"data: {source.describe()}; {len(held_out)} held-out conversations; {args.steps} steps each")
        without, seconds = run(settings, db, 0.0, args.steps)
        plain = chat_evaluation(without.model, tokenizer, held_out, budget=BUDGET, growth=False)
        _, plain_bpb = without.evaluate()
        print(f"{'mix':>6} {'adherence':>9} {'asst loss':>9} {'doc bpb':>8} {'seconds':>7}")
        adherence, loss = plain.template_adherence, plain.assistant_loss
        print(f"{0.0:>6.2f} {adherence:>9.3f} {loss:>9.3f} {plain_bpb:>8.4f} {seconds:>7.1f}")
        results = []
        for ratio in ratios:
            mixed, seconds = run(settings, db, ratio, args.steps)
            tuned = chat_evaluation(mixed.model, tokenizer, held_out, budget=BUDGET)
            _, bpb = mixed.evaluate()
            results.append((tuned, bpb))
            print(
                f"{ratio:>6.2f} {tuned.template_adherence:>9.3f} {tuned.assistant_loss:>9.3f} {bpb:>8.4f} "
                f"{seconds:>7.1f}   growth: {[s['output'] for s in tuned.growth]}"
            )
        tuned, bpb = results[0]
        print(f"RESULT template_adherence {tuned.template_adherence:.3f}")
        print(f"RESULT chat_loss_ratio {tuned.assistant_loss / plain.assistant_loss:.4f}")
        print(f"RESULT doc_bpb_ratio {bpb / plain_bpb:.4f}")
        db.dispose()


if __name__ == "__main__":
    main()
