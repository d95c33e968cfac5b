"""Learning-rate schedules, as a function of the global optimizer step (so a resumed run continues them).

constant  linear warmup, then TRAIN_LR for good. Training that never ends has no horizon to decay
          towards, and a constant rate keeps the model able to learn from data that arrives later
          (the "stable" phase of warmup-stable-decay; nanochat likewise holds its rate constant).
cosine    the original: warmup, cosine down to TRAIN_MIN_LR_RATIO x TRAIN_LR at TRAIN_TOTAL_STEPS,
          then that floor for good.

`scale` multiplies the whole schedule: the trainer lowers it after a NaN/inf loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from aifactory.settings import Settings

ScheduleName = Literal["constant", "cosine"]


@dataclass(frozen=True)
class Schedule:
    name: ScheduleName
    peak_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def lr(self, step: int, scale: float = 1.0) -> float:
        """The rate for optimizer step `step` (0-based: the first step uses lr(0))."""
        if step < self.warmup_steps:
            return scale * self.peak_lr * (step + 1) / self.warmup_steps
        if self.name == "constant":
            return scale * self.peak_lr
        floor = self.peak_lr * self.min_lr_ratio
        if step >= self.total_steps:
            return scale * floor
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return scale * (floor + 0.5 * (self.peak_lr - floor) * (1 + math.cos(math.pi * progress)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(
            name=settings.train_lr_schedule,
            peak_lr=settings.train_lr,
            warmup_steps=settings.train_warmup_steps,
            total_steps=settings.train_total_steps,
            min_lr_ratio=settings.train_min_lr_ratio,
        )
