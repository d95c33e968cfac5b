"""Benchmark of the dataset builder, on a generated bilingual corpus in a temporary SQLite database.

(a) tokens/s of `aifactory.dataset.builder.build` (database reads, parallel encoding, shard writes)
    against raw SentencePiece encoding of the same texts, already in memory, in this one process
    (`encode(texts, num_threads=1)`, its fastest single-threaded form), measured in the same run;
(b) an incremental build after adding 1% new documents against a full rebuild of the whole corpus.

    .venv/bin/python benchmarks/dataset_build.py [--documents 6000] [--chars 5000]

It ends with the two lines `RESULT builder_vs_spm_ratio <x>` and `RESULT incremental_vs_full_ratio <x>`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import tempfile
import time
from pathlib import Path

import sentencepiece as spm
import sqlalchemy as sa

from aifactory.autotune import cpu_cores
from aifactory.dataset import builder, corpus
from aifactory.dataset.engine import train_tokenizer
from aifactory.db import Database, migrate
from aifactory.db.schema import documents
from aifactory.settings import Settings

WORDS = (
    "the of and to in that with for river bird garden council city people water morning evening village "
    "school road bridge market teacher doctor farmer winter summer autumn spring forest mountain valley lake "
    "harbour train station library museum window kitchen story letter music painting season harvest weather "
    "storm sunlight shadow journey friend family neighbour child walked found built carried opened wrote "
    "remembered noticed painted visited crossed gathered quiet bright narrow ancient careful gentle heavy "
    "early late distant small large green old new government research language model network energy price "
    "company system software history science university report election policy community 2024 1998 42"
).split()
JA_PHRASES = (
    "市議会は 計画を 可決した 公園として 整備する 住民たちは 地域には 緑地が 不足していた 子どもたちが "
    "放課後に 安心して 遊べる 場所 研究者は 新しい 言語モデルを 開発した 東京 大阪 京都 政府は 経済 "
    "政策を 発表した 川の 近くに 小さな 鳥が 住んでいる 魚を 食べる 巣は 土手に つくられる 天気 春 夏 秋 冬"
).split()


def document(rng: random.Random, number: int, chars: int) -> tuple[str, str]:
    if number % 3 == 0:  # a third Japanese, as the default TRAIN_LANG_ONLY=ja,en corpus might be
        text = ""
        while len(text) < chars:
            text += "".join(rng.choice(JA_PHRASES) for _ in range(rng.randint(6, 14))) + "。"
            if rng.random() < 0.2:
                text += "\n\n"
        return "ja", text
    paragraphs, size = [], 0
    while size < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
        paragraphs.append(sentence)
        size += len(sentence) + 1
    return "en", " ".join(paragraphs)


def insert(db: Database, numbers: range, chars: int) -> None:
    rng = random.Random(numbers.start)
    rows = []
    for number in numbers:
        language, text = document(rng, number, chars)
        rows.append(
            {
                "url": f"https://site{number % 97}.example/{number}",
                "domain": f"site{number % 97}.example",
                "text": text,
                "char_count": len(text),
                "language": language,
                "source_type": "web",
                "quality_score": rng.random(),
                "content_hash": hashlib.sha256(text.encode()).digest()[:16],
                "created_at": time.time(),
            }
        )
    with db.begin() as conn:
        conn.execute(documents.insert(), rows)


def all_texts(db: Database) -> list[str]:
    with db.read() as conn:
        return list(conn.execute(sa.select(documents.c.text).order_by(documents.c.id)).scalars())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=6000)
    parser.add_argument("--chars", type=int, default=5000, help="characters per document")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aifactory-bench-"))
    try:
        db = Database(f"sqlite:///{workdir / 'bench.db'}")
        migrate.upgrade(db)
        settings = Settings(
            _env_file=None, data_dir=workdir / "data", database_url=db.url, auto_tune=False,
            tokenizer_sample_chars=5_000_000,
        )  # fmt: skip
        insert(db, range(args.documents), args.chars)
        total_chars = sum(corpus.allowed_chars(db, settings.languages()).values())
        print(f"corpus: {args.documents:,} documents, {total_chars:,} characters; {cpu_cores()} cores")
        started = time.perf_counter()
        tokenizer = train_tokenizer(settings, db, 1)
        print(f"{tokenizer.describe()} trained in {time.perf_counter() - started:.1f}s")

        # (a) the builder against raw SentencePiece in one process, on the same texts.
        full = builder.build(settings, db)
        builder_rate = full.new_tokens / full.seconds
        print(f"builder: {full.summary()}")
        texts = all_texts(db)
        sp = spm.SentencePieceProcessor(model_file=str(tokenizer.model_path))
        started = time.perf_counter()
        raw_tokens = sum(len(ids) + 1 for ids in sp.encode(texts, num_threads=1))  # +1: the EOS
        raw_seconds = time.perf_counter() - started
        raw_rate = raw_tokens / raw_seconds
        print(
            f"raw sentencepiece, one process: {raw_tokens:,} tokens in {raw_seconds:.2f}s ({raw_rate:,.0f}/s)"
        )
        assert raw_tokens == full.new_tokens, "the builder and raw SentencePiece disagree on the tokens"
        del texts

        # (b) +1% documents: the incremental build against a full rebuild of the same corpus.
        insert(db, range(args.documents, args.documents + max(1, args.documents // 100)), args.chars)
        incremental = builder.build(settings, db)
        print(f"incremental: {incremental.summary()}")
        rebuild_settings = settings.model_copy(update={"data_dir": workdir / "rebuild"})
        shutil.copytree(settings.data_dir / "tokenizer", rebuild_settings.data_dir / "tokenizer")
        rebuilt = builder.build(rebuild_settings, db)
        print(f"full rebuild: {rebuilt.summary()}")
        assert rebuilt.documents == incremental.documents
        db.dispose()
        print(f"RESULT builder_vs_spm_ratio {builder_rate / raw_rate:.3f}")
        print(f"RESULT incremental_vs_full_ratio {incremental.seconds / rebuilt.seconds:.4f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
