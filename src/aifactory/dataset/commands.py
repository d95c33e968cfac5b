"""`aifactory dataset build`, `aifactory dataset info` and `aifactory tokenizer train`."""

from __future__ import annotations

import json
import sys
import time

from aifactory.dataset import DatasetError, corpus, records
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.builder import BuildProgress, build
from aifactory.dataset.engine import train_tokenizer
from aifactory.dataset.shards import generation_dir, load_manifest
from aifactory.db.database import Database
from aifactory.settings import Settings


def dataset_build_command(settings: Settings, db: Database) -> int:
    shown = 0.0

    def progress(p: BuildProgress) -> None:
        nonlocal shown
        if time.monotonic() - shown < 0.5 and p.documents_done < p.documents_total:
            return
        shown = time.monotonic()
        rate = p.tokens / p.seconds if p.seconds else 0.0
        print(
            f"\r{p.documents_done:,}/{p.documents_total:,} documents, {p.tokens:,} tokens, "
            f"{rate:,.0f} tokens/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        report = build(settings, db, progress=progress if sys.stderr.isatty() else None)
    except DatasetError as exc:
        print(f"aifactory: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(report.summary())
    for doc_id, why in report.failures.items():
        print(f"    skipped document {doc_id}: {why}")
    return 0


def dataset_info(settings: Settings, db: Database) -> dict:
    """Every generation on disk (tokenizer and dataset) and the recorded versions."""
    generations = []
    for generation in tokenizers.generations(settings.data_dir):
        tokenizer = tokenizers.load(settings.data_dir, generation)
        manifest = load_manifest(generation_dir(settings.data_dir, generation))
        generations.append(
            {
                "generation": generation,
                "tokenizer": tokenizer.describe(),
                "tokenizer_hash": tokenizer.hash,
                "tokenizer_path": str(tokenizer.model_path),
                "vocab_size": tokenizer.vocab_size,
                "dataset": None
                if manifest is None
                else {
                    "tag": manifest.tag,
                    "documents": manifest.documents,
                    "train_tokens": manifest.train_tokens,
                    "val_tokens": manifest.val_tokens,
                    "val_tokens_by_language": manifest.val_tokens_by_language,
                    "shards": len(manifest.shards),
                    "watermark": manifest.watermark,
                    "skipped": manifest.skipped,
                    "other_language": manifest.other_language,
                    "languages": manifest.languages,
                    "path": str(generation_dir(settings.data_dir, generation)),
                },
            }
        )
    return {
        "generations": generations,
        "versions": records.list_versions(db, limit=10),
        "corpus_chars": corpus.allowed_chars(db, settings.languages()),
    }


def dataset_info_command(settings: Settings, db: Database, as_json: bool) -> int:
    info = dataset_info(settings, db)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    chars = sum(info["corpus_chars"].values())
    print(f"allowed corpus: {chars:,} characters ({settings.train_lang_only or 'all languages'})")
    if not info["generations"]:
        print(
            f"no tokenizer yet (trained at {settings.tokenizer_min_corpus_chars:,} characters, "
            "or run `aifactory tokenizer train`)"
        )
    for entry in info["generations"]:
        print(entry["tokenizer"])
        print(f"    model file {entry['tokenizer_path']}")
        dataset = entry["dataset"]
        if dataset is None:
            print("    no dataset built yet")
            continue
        per_language = ", ".join(f"{k} {v:,}" for k, v in dataset["val_tokens_by_language"].items())
        print(
            f"    dataset {dataset['tag']}: {dataset['documents']:,} documents, "
            f"{dataset['train_tokens']:,} training and {dataset['val_tokens']:,} validation tokens "
            f"({per_language or 'none'}) in {dataset['shards']} shard(s); {dataset['skipped']} skipped; "
            f"{dataset['path']}"
        )
    for row in info["versions"]:
        print(
            f"version {row['tag']}: +{row['new_documents']:,} documents, {row['train_tokens']:,} train / "
            f"{row['val_tokens']:,} val tokens, built in {row['build_seconds']:.1f}s"
        )
    return 0


def tokenizer_train_command(settings: Settings, db: Database, new_generation: bool) -> int:
    known = tokenizers.generations(settings.data_dir)
    if known and not new_generation:
        current = tokenizers.load(settings.data_dir, known[-1])
        print(
            f"aifactory: {current.describe()} exists; a new tokenizer starts a new model generation "
            "(new token data, a new model): run `aifactory tokenizer train --new-generation` for that",
            file=sys.stderr,
        )
        return 1
    chars = sum(corpus.allowed_chars(db, settings.languages()).values())
    if chars == 0:
        print("aifactory: there are no allowed documents to train a tokenizer on yet", file=sys.stderr)
        return 1
    generation = (known[-1] + 1) if known else 1
    print(f"training tokenizer generation {generation} on a sample of {chars:,} characters...")
    try:
        tokenizer = train_tokenizer(settings, db, generation)
    except DatasetError as exc:
        print(f"aifactory: {exc}", file=sys.stderr)
        return 1
    print(f"{tokenizer.describe()} in {tokenizer.info.train_seconds:.1f}s: {tokenizer.model_path}")
    if generation > 1:
        print(
            "its dataset is built from scratch by the dataset engine (or `aifactory dataset build`); "
            "the trainer keeps the previous generation until then"
        )
    return 0
