"""The dataset: documents → tokenizer → token shards → the trainer's weighted windows.

    tokenizer.py   the SentencePiece model of one *generation*: trained once, stored with its hash
    corpus.py      what the builder reads from the `documents` table (samples, new documents, texts)
    rules.py       the frozen validation split and the sampling weight of a document
    shards.py      the on-disk format: append-only token shards, a per-document index, the manifest
    encode.py      encoding documents in worker processes
    builder.py     the incremental build (new documents only, crash-safe, recorded as a version)
    source.py      the shard-backed BatchSource the trainer draws its windows from
    records.py     tokenizer generations and dataset versions in the database
    engine.py      the dataset engine: trains the tokenizer once, builds when enough is new
    commands.py    `aifactory dataset build|info` and `aifactory tokenizer train`

Nothing here imports torch except source.py, so the builder's worker processes start light.
"""

from __future__ import annotations


class DatasetError(Exception):
    """The dataset cannot be built or read; the message says why and what still stands."""
