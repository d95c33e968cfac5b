"""The shard-backed BatchSource: weighted random training windows and fixed validation windows.

Training windows. The eligible training documents, in index order, form one token stream; each
document's tokens weigh its sampling weight. A window starts at a position drawn with probability
proportional to that weight (a document picked with probability weight x length, a uniform offset in
it) and is the next seq_len + 1 tokens of the stream, running on into the following documents. So the
start and the body of a long document are covered alike (the original sampler read every further
document from its token 0, and drew the first tokens of long documents ~14x as often as their bodies),
and every token of every window comes from an eligible training document: a window never runs into a
validation document or one that was disallowed since it was built. All randomness comes from the
trainer's generator.

Eligible = in the index, allowed (`documents.allowed_for_training` now, read from the database at each
refresh, and not replaced by a newer version of its page), in today's TRAIN_LANG_ONLY, and of positive
weight. Weights are recomputed with today's policies and SOURCE_WEIGHT_*/QUALITY_WEIGHT_* settings, so
none of these changes rewrites a shard.

Validation windows, per language. Validation documents are fixed by their URL (rules.py), but the set
grows with the corpus until DATASET_VAL_MAX_TOKENS per language. To keep the windows (and so
best_val_loss) comparable while it grows, each language's windows are laid over its oldest eligible
validation documents up to the largest power of two of its tokens: they change only when a language's
validation set has doubled (a handful of times in the life of a generation) or one of its documents is
disallowed. The windows of an evaluation are shared equally among the languages, so the overall loss
weighs each language alike and each language's own loss and bits per byte can be read off.
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
VAL_LANGUAGE_MIN_SHARE = 0.02  # a language gets validation windows from this share of validation tokens


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
        self.val_languages: list[str] = []
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
        self.set_train_stream(train, lengths[train], weights[train])
        self._val_docs: dict[str, np.ndarray] = {}
        val_key = hashlib.sha256(self.tokenizer_hash.encode())
        val = np.flatnonzero(eligible & (index["split"] == VAL))
        self.val_tokens = int(lengths[val].sum())
        for code in np.unique(index["language"][val]):
            mine = val[index["language"][val] == code]
            cum = np.cumsum(lengths[mine])
            # The oldest documents up to the largest power of two of tokens (at least one document).
            limit = 1 << max(0, int(cum[-1]).bit_length() - 1)
            chosen = mine[: max(1, int(np.searchsorted(cum, limit, side="right")))]
            name = manifest.language_codes[int(code)]
            self._val_docs[name] = chosen
            val_key.update(name.encode() + index["doc_id"][chosen].tobytes())
        self.val_languages = sorted(self._val_docs)
        old_version = self.version
        self.val_version = val_key.hexdigest()[:16]
        digest = hashlib.sha256(f"{self.val_version}/{manifest.tag}/{manifest.documents}".encode())
        digest.update(train.astype(np.int64).tobytes())
        digest.update(weights[train].astype(np.float32).tobytes())
        self.version = f"{manifest.tag}-{digest.hexdigest()[:8]}"
        return self.version != old_version

    def set_train_stream(self, positions: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> None:
        """The training stream: these index positions in this order, with their lengths and weights."""
        self._train_docs = positions
        self._train_lengths = lengths
        self._train_starts = np.concatenate([[0], np.cumsum(lengths)])  # each document's stream offset
        self._train_cum = np.cumsum(weights * lengths)
        self._train_weights = weights
        self.train_tokens = int(lengths.sum())
        self.train_documents = int(positions.size)

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

    def _stream(self, start: int, span: int) -> np.ndarray:
        """`span` tokens of the training stream from position `start` on (wrapping at its end)."""
        out = np.empty(span, dtype=np.int64)
        at = int(np.searchsorted(self._train_starts, start, side="right")) - 1
        offset, filled = start - int(self._train_starts[at]), 0
        while filled < span:
            piece = self.document_tokens(int(self._train_docs[at]), offset, offset + span - filled)
            out[filled : filled + piece.size] = piece
            filled += piece.size
            at, offset = (at + 1) % self._train_docs.size, 0
        return out

    def train_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator, rows: slice | None = None
    ) -> torch.Tensor:
        """The windows of the whole batch are drawn (so every rank's generator moves alike), only
        `rows` of them are read; all at once, vectorised (`stream_windows`)."""
        span = seq_len + 1
        if self.train_documents == 0 or self._train_cum[-1] <= 0:
            raise SourceUnavailable(f"{self.describe()}: no training document may be sampled")
        # One draw per window: where it lands in the weighted stream gives the document and the offset.
        draws = torch.rand(batch_size, generator=generator, dtype=torch.float64).numpy() * self._train_cum[-1]
        docs = np.minimum(np.searchsorted(self._train_cum, draws, side="right"), self._train_docs.size - 1)
        before = np.where(docs > 0, self._train_cum[docs - 1], 0.0)
        offsets = np.floor((draws - before) / self._train_weights[docs]).astype(np.int64)
        offsets = np.clip(offsets, 0, self._train_lengths[docs] - 1)
        starts = (self._train_starts[docs] + offsets)[rows if rows is not None else slice(None)]
        return torch.from_numpy(self.stream_windows(starts, span))

    def stream_windows(self, starts: np.ndarray, span: int) -> np.ndarray:
        """[len(starts), span] tokens of the training stream from each start (wrapping at its end),
        for the whole batch at once: stream position -> training document and offset -> token."""
        total = int(self._train_starts[-1])
        at = (starts[:, None].astype(np.int64) + np.arange(span)) % total
        doc = np.searchsorted(self._train_starts, at, side="right") - 1
        return self.stream_tokens(doc, at - self._train_starts[doc])

    def stream_tokens(self, docs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Token `offsets` of training-stream documents `docs` (arrays of one shape): the vectorised
        `document_tokens`, one gather per shard (a handful) instead of one read per window."""
        first_token = self._index["start"][self._train_docs].astype(np.int64)  # in the shards' numbering
        token = first_token[docs] + offsets
        shard = np.searchsorted(self._shard_starts, token, side="right") - 1
        out = np.empty(token.shape, np.int64)
        for number in np.unique(shard):
            mine = shard == number
            out[mine] = np.asarray(self._shards[number])[token[mine] - int(self._shard_starts[number])]
        return out

    def evaluated_languages(self, seq_len: int) -> list[str]:
        """The languages validation windows are laid over: at least one window of tokens, and at least
        VAL_LANGUAGE_MIN_SHARE of the validation tokens in use (a few misdetected pages of a third
        language must not weigh as much as a whole language)."""
        total = self.exposed_val_tokens()
        return [
            name
            for name in self.val_languages
            if self.exposed_val_tokens(name) >= max(seq_len + 1, VAL_LANGUAGE_MIN_SHARE * total)
        ]

    def val_row_languages(self, batch_size: int, seq_len: int, count: int) -> list[str]:
        """The language of each validation window: rows of `val_batches` flattened, in order."""
        languages = self.evaluated_languages(seq_len)
        return [languages[row % len(languages)] for row in range(batch_size * count)] if languages else []

    def val_batches(self, batch_size: int, seq_len: int, count: int) -> list[torch.Tensor]:
        span, total = seq_len + 1, batch_size * count
        if self._val is None or self._val[0] != self.val_version:
            streams = {}
            for language, docs in self._val_docs.items():
                parts = [self.document_tokens(int(p)) for p in docs]
                streams[language] = torch.from_numpy(np.concatenate(parts).astype(np.int64))
            self._val = (self.val_version, streams)
        streams = self._val[1]
        rows = self.val_row_languages(batch_size, seq_len, count)
        if not rows:
            have = ", ".join(f"{name} {stream.numel():,}" for name, stream in streams.items()) or "none"
            raise SourceUnavailable(
                f"{self.describe()}: validation tokens per language {have}; {span} needed"
            )
        # Rows go to the languages in turn; each language's windows are evenly spaced over its
        # documents: the same for the same val_version.
        windows = torch.empty(total, span, dtype=torch.int64)
        for language in dict.fromkeys(rows):
            stream = streams[language]
            mine = [row for row, name in enumerate(rows) if name == language]
            room = stream.numel() - span
            starts = (
                torch.linspace(0, room, len(mine)).long()
                if len(mine) > 1
                else torch.zeros(1, dtype=torch.long)
            )
            windows[mine] = stream[starts[:, None] + torch.arange(span)]
        return list(windows.view(count, batch_size, span).unbind(0))

    def validation_documents(self) -> dict[str, list[np.ndarray]]:
        """Per language, the tokens of each validation document the windows are laid over (EOS last),
        oldest first: fixed for one `val_version` (the evaluation's multiple-choice task is built on them)."""
        return {
            language: [self.document_tokens(int(p)) for p in docs]
            for language, docs in self._val_docs.items()
        }

    def exposed_val_tokens(self, language: str | None = None) -> int:
        """Validation tokens the windows are laid over (of one language, or all)."""
        lengths = self._index["length"].astype(np.int64)
        chosen = [docs for name, docs in self._val_docs.items() if language in (None, name)]
        return int(sum(lengths[docs].sum() for docs in chosen))

    def describe(self) -> str:
        tag = self.manifest.tag if self.manifest else f"g{self.generation}"
        per_language = ", ".join(f"{name} {self.exposed_val_tokens(name):,}" for name in self.val_languages)
        return (
            f"dataset {tag} ({self.tokenizer.describe()}): {self.train_tokens:,} training tokens in "
            f"{self.train_documents:,} documents, {self.exposed_val_tokens():,} of {self.val_tokens:,} "
            f"validation tokens in use ({per_language or 'none'})"
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
    elif not source.evaluated_languages(span - 1):
        have = ", ".join(f"{name} {source.exposed_val_tokens(name):,}" for name in source.val_languages)
        problem = f"these validation tokens are available: {have or 'none'}"
    if problem:
        source.close()
        raise SourceUnavailable(
            f"dataset g{generation}: only {problem}; one window of TRAIN_SEQ_LEN needs {span:,} "
            "(waiting for more documents)"
        )
    return source
