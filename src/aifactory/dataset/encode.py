"""Encoding documents to token ids, in worker processes or in the builder's own process.

A worker reads the texts of its chunk from the database itself: only ids go to it and only token bytes
come back, so the builder's process never holds more than the chunks in flight. This module imports
no torch, so a worker process starts in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sentencepiece as spm

from aifactory.dataset import corpus
from aifactory.db.database import Database


@dataclass
class EncodedChunk:
    ids: np.ndarray  # int64 document ids, as asked
    lengths: np.ndarray  # int64 tokens per document, BOS and EOS included; 0 = not encoded
    tokens: bytes  # the encoded documents' tokens, concatenated, in the shards' dtype
    failures: dict[int, str] = field(default_factory=dict)  # document id -> why it was skipped


class Encoder:
    """A SentencePiece processor and a database connection: everything a chunk needs."""

    def __init__(self, db: Database, model_path: str, bos_id: int | None, eos_id: int, dtype: str) -> None:
        self.db = db
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        self.bos = [] if bos_id is None else [bos_id]  # `<s> text </s>`; generation 1 had no BOS
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype).newbyteorder("<")

    def encode_chunk(self, ids: list[int]) -> EncodedChunk:
        found = corpus.texts(self.db, ids)
        failures = {doc_id: "missing" for doc_id in ids if doc_id not in found}
        encoded = self.encode_texts(list(found.values()))
        by_id: dict[int, list[int]] = {}
        for doc_id, result in zip(found, encoded, strict=True):
            if isinstance(result, str):
                failures[doc_id] = result
            else:
                by_id[doc_id] = result
        extra = len(self.bos) + 1
        lengths = np.array([len(by_id[i]) + extra if i in by_id else 0 for i in ids], dtype=np.int64)
        flat = np.empty(int(lengths.sum()), dtype=self.dtype)
        position = 0
        for doc_id in ids:
            pieces = by_id.get(doc_id)
            if pieces is None:
                continue
            document = [*self.bos, *pieces, self.eos_id]
            flat[position : position + len(document)] = document
            position += len(document)
        return EncodedChunk(np.asarray(ids, dtype=np.int64), lengths, flat.tobytes(), failures)

    def encode_texts(self, texts: list[str]) -> list[list[int] | str]:
        """Token ids per text, or the reason it could not be encoded (one bad text spoils no other)."""
        try:
            return list(self.sp.encode(texts, num_threads=1))
        except Exception:  # some text in the batch is bad: find it by encoding one at a time
            out: list[list[int] | str] = []
            for text in texts:
                try:
                    out.append(self.sp.encode(text))
                except Exception as exc:
                    out.append(f"{type(exc).__name__}: {exc}"[:200])
            return out


_worker: Encoder | None = None


def init_worker(db_url: str, model_path: str, bos_id: int | None, eos_id: int, dtype: str) -> None:
    """ProcessPoolExecutor initializer: one database connection and one tokenizer per process."""
    global _worker
    # A single-threaded process: one connection, no overflow (a pool of workers would otherwise open
    # up to a dozen connections each at the database server).
    _worker = Encoder(Database(db_url, pool_size=1, max_overflow=0), model_path, bos_id, eos_id, dtype)


def encode_in_worker(ids: list[int]) -> EncodedChunk:
    assert _worker is not None, "init_worker was not called in this process"
    return _worker.encode_chunk(ids)
