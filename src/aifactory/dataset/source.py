"""The shard-backed BatchSource: weighted random training windows and fixed validation windows.

Training windows. A window's first token is drawn with probability proportional to its document's
sampling weight (a document is picked with probability weight x length, then a uniform position in
it); the window then runs to the end of that document and goes on with further documents drawn the
same way, from their start, until it is full. Every token of every window therefore comes from an
eligible training document, drawn by weight: a window never runs into a validation document or into
one that was disallowed since it was built. All randomness comes from the trainer's generator.

Eligible = in the index, allowed (`documents.allowed_for_training` now, read from the database at each
refresh), in today's TRAIN_LANG_ONLY, and of positive weight. Weights are recomputed with today's
policies and SOURCE_WEIGHT_*/QUALITY_WEIGHT_* settings, so none of these changes rewrites a shard.

Validation windows. Validation documents are fixed by their URL (rules.py), but the set grows with the
corpus until DATASET_VAL_MAX_TOKENS. To keep the windows (and so best_val_loss) comparable while it
grows, the windows are laid over the oldest eligible validation documents up to the largest power of
two of tokens available: the windows change only when the validation set has doubled (a handful of
times in the life of a generation) or when one of its documents is disallowed.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from aifactory.autotune import resolve_profile
from aifactory.dataset import DatasetError, corpus, rules
from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.shards import (
    TRAIN,
    VAL,
    Manifest,
    generation_dir,
    load_manifest,
    open_shards,
    read_domains,
    read_index,
    shard_starts,
)
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.batches import SourceUnavailable

ALLOWED_CHECK_SEC = 30.0  # how often refresh() asks the database which documents became disallowed
DRAWS = 64  # uniform numbers drawn from the generator at a time while filling windows


class ShardSource:
    """One generation's dataset as the trainer sees it (aifactory.train.batches.BatchSource)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        generation: int,
        *,
        allowed_check_sec: float = ALLOWED_CHECK_SEC,
        owns_db: bool = False,
    ) -> None:
        self.settings, self.db, self.generation = settings, db, generation
        self.directory = generation_dir(settings.data_dir, generation)
        self.allowed_check_sec = allowed_check_sec
        self._owns_db = owns_db
        self.tokenizer = tokenizers.load(settings.data_dir, generation)
        self.tokenizer_hash = self.tokenizer.hash
        self.vocab_size = self.tokenizer.vocab_size
        self.token_bytes = torch.from_numpy(self.tokenizer.token_bytes())
        self.manifest: Manifest | None = None
        self._manifest_stamp: tuple[int, int] | None = None
        self._blocked = np.zeros(0, np.int64)
        self._policies: list = []
        self._checked_at = -float("inf")
        self._val: tuple[str, torch.Tensor] | None = None
        self.version = self.val_version = ""
        self.train_tokens = 0
        self.val_tokens = 0
        self.train_documents = 0
        if not self._load(force=True):
            raise SourceUnavailable(f"no dataset has been built for tokenizer generation {generation} yet")

    # --- loading ----------------------------------------------------------------------------------------
    def _load(self, force: bool = False) -> bool:
        """Re-read what changed (manifest, allowed flags, policies); True if the data changed."""
        path = self.directory / "manifest.json"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        reread = force or stamp != self._manifest_stamp
        if reread:
            manifest = load_manifest(self.directory)
            if manifest is None or manifest.documents == 0:
                return False
            self.manifest, self._manifest_stamp = manifest, stamp
            self._index = read_index(self.directory, manifest)
            self._domains = read_domains(self.directory, manifest)
            self._shards = open_shards(self.directory, manifest)
            self._shard_starts = shard_starts(manifest)
        changed = reread
        if force or reread or time.monotonic() - self._checked_at >= self.allowed_check_sec:
            blocked, policies = corpus.blocked_ids(self.db), policy_db.load(self.db)
            changed = changed or not np.array_equal(blocked, self._blocked) or policies != self._policies
            self._blocked, self._policies = blocked, policies
            self._checked_at = time.monotonic()
        return self._select() if changed else False

    def _select(self) -> bool:
        """Recompute eligibility, weights and versions; True if `version` changed."""
        manifest, index = self.manifest, self._index
        assert manifest is not None
        weights = rules.document_weights(
            self.settings,
            self._policies,
            manifest.sources,
            self._domains,
            index["source"],
            index["domain"],
            index["quality"],
        )
        languages = self.settings.languages()
        eligible = ~np.isin(index["doc_id"], self._blocked) & (weights > 0)
        if languages:
            allowed_codes = [code for code, name in enumerate(manifest.language_codes) if name in languages]
            eligible &= np.isin(index["language"], allowed_codes)
        train = np.flatnonzero(eligible & (index["split"] == TRAIN))
        lengths = index["length"].astype(np.int64)
        self._train_docs = train
        self._train_cum = np.cumsum(weights[train] * lengths[train])
        self.train_tokens = int(lengths[train].sum())
        self.train_documents = int(train.size)
        val = np.flatnonzero(eligible & (index["split"] == VAL))
        val_cum = np.cumsum(lengths[val])
        self.val_tokens = int(val_cum[-1]) if val.size else 0
        # Expose the oldest documents up to the largest power of two of tokens (at least one document).
        limit = 1 << max(0, self.val_tokens.bit_length() - 1) if self.val_tokens else 0
        self._val_docs = (
            val[: max(1, int(np.searchsorted(val_cum, limit, side="right")))] if val.size else val
        )
        val_key = hashlib.sha256(self.tokenizer_hash.encode())
        val_key.update(index["doc_id"][self._val_docs].tobytes())
        old_version = self.version
        self.val_version = val_key.hexdigest()[:16]
        digest = hashlib.sha256(f"{self.val_version}/{manifest.tag}/{manifest.documents}".encode())
        digest.update(train.astype(np.int64).tobytes())
        digest.update(weights[train].astype(np.float32).tobytes())
        self.version = f"{manifest.tag}-{digest.hexdigest()[:8]}"
        return self.version != old_version

    def refresh(self) -> bool:
        """Pick up new shards, newly disallowed documents and policy changes; True if `version` changed."""
        return self._load()

    # --- windows ----------------------------------------------------------------------------------------
    def document_tokens(self, position: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens [start:stop] of the index's `position`-th document (its EOS is the last one)."""
        record = self._index[position]
        begin = int(record["start"])
        shard = int(np.searchsorted(self._shard_starts, begin, side="right")) - 1
        offset = begin - int(self._shard_starts[shard])
        end = int(record["length"]) if stop is None else min(stop, int(record["length"]))
        return np.asarray(self._shards[shard][offset + start : offset + end])

    def _pick(self, draw: float) -> int:
        """The index position of the training document a uniform draw in [0, 1) lands on."""
        at = int(np.searchsorted(self._train_cum, draw * self._train_cum[-1], side="right"))
        return int(self._train_docs[min(at, self._train_docs.size - 1)])

    def train_batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        span = seq_len + 1
        if self.train_documents == 0 or self._train_cum[-1] <= 0:
            raise SourceUnavailable(f"{self.describe()}: no training document may be sampled")
        out = np.empty((batch_size, span), dtype=np.int64)
        draws: list[float] = []

        def draw() -> float:
            if not draws:
                draws.extend(torch.rand(DRAWS, generator=generator, dtype=torch.float64).tolist()[::-1])
            return draws.pop()

        for row in range(batch_size):
            first = self._pick(draw())
            offset = int(draw() * int(self._index[first]["length"]))
            piece = self.document_tokens(first, offset, offset + span)
            out[row, : piece.size] = piece
            filled = piece.size
            while filled < span:
                piece = self.document_tokens(self._pick(draw()), 0, span - filled)
                out[row, filled : filled + piece.size] = piece
                filled += piece.size
        return torch.from_numpy(out)

    def val_batches(self, batch_size: int, seq_len: int, count: int) -> list[torch.Tensor]:
        span, total = seq_len + 1, batch_size * count
        if self._val is None or self._val[0] != self.val_version:
            parts = [self.document_tokens(int(p)) for p in self._val_docs]
            stream = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
            self._val = (self.val_version, torch.from_numpy(stream))
        stream = self._val[1]
        room = stream.numel() - span
        if room < 0:
            raise SourceUnavailable(f"{self.describe()}: {stream.numel()} validation tokens, {span} needed")
        # Evenly spaced windows over the exposed validation documents: the same for the same val_version.
        starts = torch.linspace(0, room, total).long() if total > 1 else torch.zeros(1, dtype=torch.long)
        windows = stream[starts[:, None] + torch.arange(span)]
        return list(windows.view(count, batch_size, span).unbind(0))

    def exposed_val_tokens(self) -> int:
        return int(self._index["length"][self._val_docs].astype(np.int64).sum()) if self._val_docs.size else 0

    def describe(self) -> str:
        tag = self.manifest.tag if self.manifest else f"g{self.generation}"
        return (
            f"dataset {tag} ({self.tokenizer.describe()}): {self.train_tokens:,} training tokens in "
            f"{self.train_documents:,} documents, {self.exposed_val_tokens():,} of {self.val_tokens:,} "
            "validation tokens in use"
        )

    def close(self) -> None:
        if self._owns_db:
            self.db.dispose()


def newest_built_generation(data_dir: Path) -> int | None:
    """The newest tokenizer generation whose dataset has documents (a new generation's tokenizer
    is not used until its dataset has been built)."""
    for generation in reversed(tokenizers.generations(data_dir)):
        manifest = load_manifest(generation_dir(data_dir, generation))
        if manifest is not None and manifest.documents > 0:
            return generation
    return None


def open_source(settings: Settings, db: Database | None = None) -> ShardSource:
    """The trainer's data: the newest built generation, checked to hold at least one window of
    TRAIN_SEQ_LEN for training and for validation. Raises SourceUnavailable saying what is missing."""
    data_dir = Path(settings.data_dir)
    if not tokenizers.generations(data_dir):
        raise SourceUnavailable(
            "no tokenizer yet: the dataset engine trains one once the allowed corpus has "
            f"{settings.tokenizer_min_corpus_chars:,} characters (TOKENIZER_MIN_CORPUS_CHARS), "
            "or run `aifactory tokenizer train`"
        )
    generation = newest_built_generation(data_dir)
    if generation is None:
        raise SourceUnavailable(
            "the tokenizer exists but no documents have been tokenized yet "
            "(the dataset engine builds them, or run `aifactory dataset build`)"
        )
    owns = db is None
    database = db or Database(settings.resolved_database_url(), pool_size=1)
    try:
        source = ShardSource(settings, database, generation, owns_db=owns)
    except (DatasetError, SourceUnavailable):
        if owns:
            database.dispose()
        raise
    span = resolve_profile(settings).train_seq_len + 1
    problem = ""
    if source.train_tokens < span:
        problem = f"{source.train_tokens:,} training tokens may be sampled"
    elif source.exposed_val_tokens() < span:
        problem = f"{source.exposed_val_tokens():,} validation tokens are available"
    if problem:
        source.close()
        raise SourceUnavailable(
            f"dataset g{generation}: only {problem}; one window of TRAIN_SEQ_LEN needs {span:,} "
            "(waiting for more documents)"
        )
    return source
