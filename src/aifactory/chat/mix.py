"""Conversation windows mixed into the trainer's batches (a BatchSource around the document source).

Each row of a training batch is a conversation window with probability CHAT_MIX_RATIO (drawn with the
trainer's generator, so resumes and DDP ranks see the same batches), otherwise a document window from
the dataset as before. A conversation window starts at the start of a conversation drawn uniformly
and runs on into the following ones, like a document window; its loss mask counts the assistant's
tokens only (chat/encode.py), a document window's counts every token. Synthetic conversations are a
separate pool that gets at most CHAT_SYNTHETIC_MAX_SHARE of the conversation windows (and no more than
their share of all conversations); with no ingested conversations the rest of those windows stay
documents. So synthetic windows are never more than CHAT_MIX_RATIO x CHAT_SYNTHETIC_MAX_SHARE of the
batch, and the corpus's own question-and-answer pairs cannot crowd out the user's.

Validation stays the documents' (the same windows, the same val_version): `best_val_loss` and early
stopping keep measuring what they did, and the chat part of the evaluation measures the rest. The
mix is in `mix`, which the trainer writes into every checkpoint.

`aifactory train --chat-only` is the same source with the ratio at 1: every window a conversation.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from aifactory.chat import store
from aifactory.chat.encode import EncodedConversations
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.batches import BatchSource, SourceUnavailable
from aifactory.train.loader import Batch

CHECK_SEC = 30.0  # how often refresh() asks the database whether the conversations changed


class ChatMixSource:
    """A BatchSource: `base`'s documents with conversation windows mixed in at `ratio`."""

    def __init__(
        self,
        base: BatchSource,
        tokenizer: Any,
        db: Database,
        *,
        ratio: float,
        synthetic_max_share: float,
        check_sec: float = CHECK_SEC,
    ) -> None:
        self.base, self.tokenizer, self.db = base, tokenizer, db
        self.ratio, self.synthetic_max_share, self.check_sec = ratio, synthetic_max_share, check_sec
        self._fingerprint = ""
        self._checked_at = -float("inf")
        self.ingested = self.synthetic = EncodedConversations(tokenizer, [])
        self._reload()
        self._sync()

    # --- what the trainer reads -----------------------------------------------------------------------
    def _sync(self) -> None:
        base = self.base
        self.val_version = base.val_version
        self.tokenizer_hash = base.tokenizer_hash
        self.vocab_size = base.vocab_size
        self.token_bytes = base.token_bytes
        self.train_tokens = base.train_tokens + int(self.ingested.tokens.size + self.synthetic.tokens.size)
        self.version = f"{base.version}+chat{self.ratio:g}-{self._fingerprint}"
        self.mix = {
            "chat_ratio": self.ratio,
            "conversations": self.ingested.count,
            "synthetic_conversations": self.synthetic.count,
            "synthetic_max_share": self.synthetic_max_share,
            "synthetic_share": round(self.synthetic_share(), 4),
            "conversations_version": self._fingerprint,
        }

    def _reload(self) -> bool:
        fingerprint = store.fingerprint(self.db)
        self._checked_at = time.monotonic()
        if fingerprint == self._fingerprint:
            return False
        train = store.load(self.db, split=store.TRAIN)
        self.ingested = EncodedConversations(self.tokenizer, [c.messages for c in train if not c.synthetic])
        self.synthetic = EncodedConversations(self.tokenizer, [c.messages for c in train if c.synthetic])
        self._fingerprint = fingerprint
        return True

    def synthetic_share(self) -> float:
        """The share of conversation windows drawn from the synthetic pool."""
        if self.synthetic.count == 0:
            return 0.0
        if self.ingested.count == 0:
            return self.synthetic_max_share  # the other windows stay documents (see train_batch)
        return min(
            self.synthetic_max_share, self.synthetic.count / (self.synthetic.count + self.ingested.count)
        )

    def refresh(self) -> bool:
        changed = self.base.refresh()
        if time.monotonic() - self._checked_at >= self.check_sec:
            changed = self._reload() or changed
        if changed:
            self._sync()
        return changed

    # --- batches ---------------------------------------------------------------------------------------
    def train_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator, rows: slice | None = None
    ) -> Batch:
        """The whole batch's choices are drawn (so every DDP rank's generator moves alike); only
        `rows` of it are built. The loss mask is per target: the assistant's tokens of conversation
        windows, every token of document windows."""
        span = seq_len + 1
        # Per row: conversation or not, which pool, which conversation; all from the generator.
        draws = torch.rand(batch_size, 3, generator=generator, dtype=torch.float64)
        share = self.synthetic_share()
        chat = draws[:, 0] < self.ratio
        synthetic = chat & (draws[:, 1] < share)
        ingested = chat & (draws[:, 1] >= share) & (self.ingested.count > 0)
        documents = ~(synthetic | ingested)  # with no ingested conversations those rows stay documents
        rows = rows if rows is not None else slice(0, batch_size)
        start, stop, _ = rows.indices(batch_size)
        tokens = torch.empty(stop - start, span, dtype=torch.int64)
        mask = torch.ones(stop - start, span, dtype=torch.bool)
        if bool(documents.any()):
            # The base draws its windows for every document row of the batch; ours are a range of them.
            before = torch.cumsum(documents.long(), 0) - documents.long()
            first, last = int(before[start]), int(before[stop - 1] + documents[stop - 1])
            drawn = self.base.train_batch(int(documents.sum()), seq_len, generator, rows=slice(first, last))
            mine = documents[start:stop]
            if isinstance(drawn, Batch):
                tokens[mine] = drawn.tokens
                if drawn.loss_mask is not None:
                    mask[mine, 1:] = drawn.loss_mask
            else:
                tokens[mine] = drawn
        for pool_rows, pool in ((synthetic, self.synthetic), (ingested, self.ingested)):
            for row in torch.nonzero(pool_rows[start:stop]).flatten().tolist():
                pick = min(pool.count - 1, int(float(draws[start + row, 2]) * pool.count))
                ids, learn = pool.window(pick, span)
                tokens[row] = torch.from_numpy(ids.astype(np.int64))
                mask[row] = torch.from_numpy(learn)
        return Batch(tokens, mask[:, 1:])

    def val_batches(self, batch_size: int, seq_len: int, count: int) -> list[torch.Tensor]:
        return self.base.val_batches(batch_size, seq_len, count)

    def val_row_languages(self, batch_size: int, seq_len: int, count: int) -> list[str]:
        return self.base.val_row_languages(batch_size, seq_len, count)

    def describe(self) -> str:
        synthetic = f", {self.synthetic.count:,} synthetic" if self.synthetic.count else ""
        return (
            f"{self.base.describe()}; conversations {self.ingested.count:,}{synthetic} "
            f"at {self.ratio:.0%} of the windows (assistant tokens only)"
        )

    def close(self) -> None:
        close = getattr(self.base, "close", None)
        if close is not None:
            close()


def with_chat_mix(
    settings: Settings, base: BatchSource, *, ratio: float | None = None, require: bool = False
) -> BatchSource:
    """`base` with conversation windows mixed in, when there are conversations and a tokenizer with
    the chat template's control tokens; `base` itself otherwise (or SourceUnavailable if `require`)."""
    ratio = settings.chat_mix_ratio if ratio is None else ratio
    tokenizer = getattr(base, "tokenizer", None)
    db = getattr(base, "db", None)
    if tokenizer is None or db is None or not hasattr(tokenizer, "special_ids"):
        if require:
            raise SourceUnavailable(
                "chat tuning needs the factory's tokenizer and dataset (not --text-file: bytes have no "
                "chat template tokens)"
            )
        return base
    if ratio <= 0 and not require:
        return base
    mixed = ChatMixSource(
        base, tokenizer, db, ratio=ratio, synthetic_max_share=settings.chat_synthetic_max_share
    )
    if require and mixed.ingested.count + mixed.synthetic.count == 0:
        raise SourceUnavailable(
            "no conversations to train on: add some with `aifactory ingest --chat FILE` (or drop files "
            "into DATA_DIR/chat-inbox)"
        )
    return mixed
