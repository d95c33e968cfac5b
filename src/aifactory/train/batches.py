"""How the trainer gets its data: the BatchSource protocol, and a source over token arrays in memory.

The trainer never opens files or knows about shards, documents or source weights. It asks a BatchSource
for random training windows (drawn with a generator the trainer owns and checkpoints, so a resumed run
continues exactly where it stopped instead of re-reading the start of the corpus) and for a fixed set
of validation windows. The dataset builder (issue #5) provides the shard-backed source that draws
windows weighted by source and quality; `TokenArraySource` below is the same contract over in-memory
arrays, used by the tests and by `aifactory train --text-file` with a byte-level encoding.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs from a dataset.

    Attributes may change only inside `refresh()`, which the trainer calls between cycles (never
    during one), so a cycle always sees one consistent version of the data.
    """

    version: str  # identifies the training data; changes whenever new data is picked up
    val_version: str  # identifies the validation windows; best_val_loss is only compared within one
    tokenizer_hash: str  # identifies the tokenizer; a checkpoint only resumes on the same one
    vocab_size: int  # the tokenizer's vocabulary = the model's vocabulary
    train_tokens: int  # tokens in the training split (an epoch = this many tokens seen)
    token_bytes: torch.Tensor  # [vocab_size] int64: UTF-8 bytes each token stands for, 0 = special

    def train_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator, rows: slice | None = None
    ) -> torch.Tensor:
        """[batch_size, seq_len + 1] int64 random training windows (inputs and shifted targets), or
        only `rows` of them.

        Every random choice must come from `generator` (CPU), so equal generator states give equal
        batches. Under DDP every rank draws the global batch with the same generator state and reads
        only its own `rows`, which is what makes N processes see exactly the data one process would."""
        ...

    def val_batches(self, batch_size: int, seq_len: int, count: int) -> list[torch.Tensor]:
        """`count` fixed [batch_size, seq_len + 1] validation windows: the same ones for the same
        `val_version`, drawn from text the trainer never trains on."""
        ...

    def val_row_languages(self, batch_size: int, seq_len: int, count: int) -> list[str]:
        """The language of each row of `val_batches(batch_size, seq_len, count)`, flattened in order,
        so validation can be reported per language; [] when the data has no languages."""
        ...

    def refresh(self) -> bool:
        """Pick up data built since the last call (new shards); True if `version` changed."""
        ...

    def describe(self) -> str:
        """One line for logs and status: what this data is and how big."""
        ...


class SourceUnavailable(Exception):
    """No training data yet (no tokenizer or shards); the message says what is missing."""


def byte_token_bytes() -> torch.Tensor:
    return torch.ones(256, dtype=torch.int64)


class TokenArraySource:
    """Uniformly random windows over a token array in memory, and evenly spaced validation windows.

    `append()` adds training tokens (another thread may call it); they become visible at the next
    `refresh()`, as new shards would."""

    def __init__(
        self,
        train: np.ndarray,
        val: np.ndarray,
        *,
        vocab_size: int,
        token_bytes: torch.Tensor,
        tokenizer_hash: str,
        name: str = "tokens",
    ) -> None:
        if token_bytes.shape != (vocab_size,):
            raise ValueError(f"token_bytes must have one entry per token ({vocab_size})")
        self.vocab_size = vocab_size
        self.token_bytes = token_bytes.to(torch.int64)
        self.tokenizer_hash = tokenizer_hash
        self.name = name
        self._val = torch.from_numpy(np.asarray(val, dtype=np.int64))
        self.val_version = _digest(self._val.numpy())
        self._lock = threading.Lock()
        self._pending: list[np.ndarray] = []
        self._train = torch.from_numpy(np.asarray(train, dtype=np.int64))
        self._version_digest = hashlib.sha256(self._train.numpy().tobytes())
        self.version = self._version_digest.hexdigest()[:16]
        self.train_tokens = int(self._train.numel())

    @classmethod
    def from_text_file(cls, path: Path, val_fraction: float = 0.05) -> TokenArraySource:
        """A text file as UTF-8 bytes, one token per byte (vocabulary 256): the honest stand-in for a
        tokenizer. The last `val_fraction` of the file is held out for validation."""
        data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
        if data.size < 2048:
            raise SourceUnavailable(f"{path} has {data.size} bytes; at least 2048 are needed to train on")
        split = int(data.size * (1 - val_fraction))
        return cls(
            data[:split],
            data[split:],
            vocab_size=256,
            token_bytes=byte_token_bytes(),
            tokenizer_hash="utf8-bytes",
            name=f"{path} (UTF-8 bytes as tokens)",
        )

    def append(self, tokens: np.ndarray) -> None:
        with self._lock:
            self._pending.append(np.asarray(tokens, dtype=np.int64))

    def refresh(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return False
        for part in pending:
            self._version_digest.update(part.tobytes())
        self._train = torch.cat([self._train, *(torch.from_numpy(part) for part in pending)])
        self.train_tokens = int(self._train.numel())
        self.version = self._version_digest.hexdigest()[:16]
        return True

    def train_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator, rows: slice | None = None
    ) -> torch.Tensor:
        span = seq_len + 1
        if self._train.numel() < span:
            raise SourceUnavailable(f"{self.name}: {self._train.numel()} training tokens, {span} needed")
        starts = torch.randint(0, self._train.numel() - span + 1, (batch_size,), generator=generator)
        starts = starts[rows] if rows is not None else starts
        return self._train[starts[:, None] + torch.arange(span)]

    def val_batches(self, batch_size: int, seq_len: int, count: int) -> list[torch.Tensor]:
        span, total = seq_len + 1, batch_size * count
        room = self._val.numel() - span
        if room < 0:
            raise SourceUnavailable(f"{self.name}: {self._val.numel()} validation tokens, {span} needed")
        # Evenly spaced windows: the same every time, covering the held-out text as far as it goes.
        starts = torch.linspace(0, room, total).long() if total > 1 else torch.zeros(1, dtype=torch.long)
        windows = self._val[starts[:, None] + torch.arange(span)]
        return list(windows.view(count, batch_size, span).unbind(0))

    def val_row_languages(self, batch_size: int, seq_len: int, count: int) -> list[str]:
        return []  # bytes or tokens of no particular language

    def describe(self) -> str:
        return f"{self.name}: {self.train_tokens:,} training and {self._val.numel():,} validation tokens"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]
