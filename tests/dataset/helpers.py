"""A small bilingual corpus written straight into `documents`, and a tokenizer trained on it."""

from __future__ import annotations

import functools
import hashlib
import lzma
import random
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.engine import train_tokenizer
from aifactory.db.database import Database
from aifactory.db.schema import documents
from aifactory.settings import Settings
from tests.text.pages import NEWS_EN, NEWS_JA, WIKI_EN, WIKI_JA, varied_text

# Small enough for tests: a 600-piece vocabulary, shards of 2,000 tokens (so builds span several).
SMALL: dict[str, Any] = dict(
    train_vocab_size=600,
    tokenizer_min_corpus_chars=10_000,
    tokenizer_sample_chars=200_000,
    dataset_val_fraction=0.2,
    dataset_val_max_tokens=1_000_000,
    dataset_shard_tokens=2_000,
    spm_num_threads=1,
    train_lang_only="en,ja",
    train_seq_len=32,
    dataset_build_workers=1,
)


def small_settings(make_settings: Any, db: Database, **overrides: Any) -> Settings:
    return make_settings(database_url=db.url, **{**SMALL, **overrides})


def document_text(number: int, language: str) -> str:
    rng = random.Random(number)
    if language == "ja":
        paragraphs = rng.sample(NEWS_JA + WIKI_JA, 3)
        return "\n\n".join(paragraphs) + f"\n\n記事番号{number}。"
    return varied_text(rng.randint(1, 3), seed=number) + "\n\n" + rng.choice(NEWS_EN + WIKI_EN)


def add_documents(
    db: Database,
    numbers: range | list[int],
    *,
    language: str | None = None,
    source: str = "web",
    domain: str = "example.com",
    quality: float = 0.5,
    allowed: bool = True,
    text: str | None = None,
) -> list[int]:
    """Insert documents number..., English for even numbers and Japanese for odd ones (unless given)."""
    ids = []
    with db.begin() as conn:
        for number in numbers:
            lang = language or ("ja" if number % 2 else "en")
            body = text if text is not None else document_text(number, lang)
            row = conn.execute(
                documents.insert()
                .values(
                    url=f"https://{domain}/doc/{number}",
                    final_url=f"https://{domain}/doc/{number}",
                    domain=domain,
                    title=f"document {number}",
                    text=body,
                    char_count=len(body),
                    language=lang,
                    language_confidence=0.99,
                    source_type=source,
                    quality_score=quality,
                    content_hash=hashlib.sha256(f"{domain}/{number}/{body}".encode()).digest()[:16],
                    allowed_for_training=allowed,
                    block_reason="" if allowed else "policy:test",
                    created_at=db.now(),
                )
                .returning(documents.c.id)
            )
            ids.append(int(row.scalar_one()))
    return ids


CORPUS = Path(__file__).parent / "corpus"


@functools.cache
def real_texts(language: str) -> tuple[str, ...]:
    """Pages of LibreOffice's help in English ("en") or Japanese ("ja"): real text (see corpus/README.md)."""
    data = lzma.decompress((CORPUS / f"libreoffice-help-{language}.txt.xz").read_bytes()).decode()
    return tuple(data.split("\n\f\n"))


def add_texts(
    db: Database, texts: list[str], language: str, *, first: int = 0, allowed: bool = True
) -> list[int]:
    """Insert each text as a document numbered first, first + 1, ..., in `language`."""
    ids = []
    for number, text in enumerate(texts, start=first):
        ids += add_documents(db, [number], language=language, text=text, allowed=allowed)
    return ids


def set_allowed(db: Database, ids: list[int], allowed: bool) -> None:
    with db.begin() as conn:
        conn.execute(documents.update().where(documents.c.id.in_(ids)).values(allowed_for_training=allowed))


def trained_tokenizer(settings: Settings, db: Database) -> tokenizers.Tokenizer:
    return train_tokenizer(settings, db, 1)


def document_ids(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(sa.select(documents.c.id).order_by(documents.c.id)).scalars())


def snapshot(settings: Settings, generation: int = 1) -> dict[int, tuple[tuple[int, ...], int]]:
    """Each tokenized document's tokens and split, by document id, as read back from the shards."""
    from aifactory.dataset.shards import generation_dir, load_manifest, open_shards, read_index, shard_starts

    directory = generation_dir(settings.data_dir, generation)
    manifest = load_manifest(directory)
    assert manifest is not None
    shards, starts = open_shards(directory, manifest), shard_starts(manifest)
    out = {}
    for record in read_index(directory, manifest):
        shard = int(np.searchsorted(starts, record["start"], side="right")) - 1
        offset = int(record["start"] - starts[shard])
        tokens = shards[shard][offset : offset + int(record["length"])]
        assert tokens.size == record["length"], "a document runs past the end of its shard"
        out[int(record["doc_id"])] = (tuple(int(t) for t in tokens), int(record["split"]))
    return out


def all_tokens(settings: Settings, generation: int = 1) -> bytes:
    """The committed part of every shard, concatenated."""
    from aifactory.dataset.shards import generation_dir, load_manifest, open_shards

    directory = generation_dir(settings.data_dir, generation)
    manifest = load_manifest(directory)
    assert manifest is not None
    return b"".join(np.asarray(shard).tobytes() for shard in open_shards(directory, manifest))


def copy_tokenizer(source: Settings, target: Settings) -> None:
    """Give `target` (another DATA_DIR) the same tokenizer generation 1 as `source`."""
    import shutil

    shutil.copytree(source.data_dir / "tokenizer", target.data_dir / "tokenizer")
