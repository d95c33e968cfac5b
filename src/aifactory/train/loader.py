"""The trainer's loader: micro-batches drawn ahead on a background thread, in the sampler's order.

The step never waits for data that could have been ready: a thread draws the next micro-batches
(the source samples each whole batch vectorised, dataset/source.py), each DDP rank reading only its
own rows of the global batch, copies them into pinned memory on CUDA (so the copy to the GPU is
asynchronous) and queues up to TRAIN_PREFETCH_BATCHES of them (0: drawn on the training thread).

Reproducibility is kept exactly. The thread draws with its own copy of the trainer's generator, and
every batch carries the generator state *after* it was drawn; the trainer adopts that state when it
consumes the batch. So the checkpointed sampler state is always that of the last batch trained on, and
a resumed run draws the same batches as one that never stopped: the same order as calling
`source.train_batch` in the training loop. Whenever the trainer's generator is set from elsewhere
(a restore, a rewind at Stop) or the data or the batch size change (between cycles), `reset()` drops
what was drawn ahead and the thread starts again from the trainer's state.

A Batch carries an optional loss mask: chat tuning (issue 18) trains on the assistant's tokens only,
and its source returns Batch objects with the mask set; masked targets become IGNORE_INDEX.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass

import torch

from aifactory.train.batches import BatchSource

IGNORE_INDEX = -1  # the target the model's losses skip (model/llama.py, model/chunked_loss.py)


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, T + 1] int64: inputs and the targets shifted by one
    loss_mask: torch.Tensor | None = None  # [B, T] bool, True = this target is trained on

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        targets = self.tokens[:, 1:]
        return targets if self.loss_mask is None else targets.masked_fill(~self.loss_mask, IGNORE_INDEX)

    def pin(self) -> Batch:
        mask = self.loss_mask.pin_memory() if self.loss_mask is not None else None
        return Batch(self.tokens.pin_memory(), mask)

    def to(self, device: torch.device) -> Batch:
        mask = self.loss_mask.to(device, non_blocking=True) if self.loss_mask is not None else None
        return Batch(self.tokens.to(device, non_blocking=True), mask)


class BatchLoader:
    """Prefetches [batch_size] rows of each [batch_size x world_size] global batch for `rank`."""

    def __init__(
        self,
        source: BatchSource,
        *,
        rank: int = 0,
        world_size: int = 1,
        pin: bool = False,
        prefetch: int = 2,
    ) -> None:
        self.source, self.rank, self.world_size, self.pin = source, rank, world_size, pin
        self.prefetch = prefetch
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._shape: tuple[int, int] = (0, 0)

    def next(self, generator: torch.Generator, batch_size: int, seq_len: int) -> Batch:
        """The next micro-batch after `generator`'s state, which is moved past it."""
        if self.prefetch == 0:
            return self._draw(generator, batch_size, seq_len)
        if self._thread is None or self._shape != (batch_size, seq_len):
            self.reset()
            self._start(generator.get_state(), batch_size, seq_len)
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.reset()
            raise item
        batch, state = item
        generator.set_state(state)
        return batch

    def reset(self) -> None:
        """Drop what was drawn ahead; the next `next()` starts from the generator it is given."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting for room
                self._queue.get(timeout=0.05)
        self._thread = None
        self._queue = queue.Queue(maxsize=max(1, self.prefetch))

    close = reset

    def _draw(self, generator: torch.Generator, batch_size: int, seq_len: int) -> Batch:
        rows = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        drawn = self.source.train_batch(batch_size * self.world_size, seq_len, generator, rows=rows)
        batch = drawn if isinstance(drawn, Batch) else Batch(drawn)
        return batch.pin() if self.pin else batch

    def _start(self, state: torch.Tensor, batch_size: int, seq_len: int) -> None:
        self._stop = threading.Event()
        self._shape = (batch_size, seq_len)
        self._thread = threading.Thread(
            target=self._produce,
            args=(state, batch_size, seq_len, self._stop, self._queue),
            name="batch-loader",
            daemon=True,
        )
        self._thread.start()

    def _produce(
        self, state: torch.Tensor, batch_size: int, seq_len: int, stop: threading.Event, out: queue.Queue
    ) -> None:
        generator = torch.Generator()
        generator.set_state(state)
        while not stop.is_set():
            try:
                item: object = (self._draw(generator, batch_size, seq_len), generator.get_state())
            except BaseException as exc:  # handed to the training thread, which raises it
                item = exc
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
