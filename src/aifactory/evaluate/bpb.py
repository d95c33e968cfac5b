"""Bits per byte on the trainer's frozen validation windows, overall and per language.

The same arithmetic as Trainer.evaluate: the loss summed over tokens that stand for text, in bits, over
the UTF-8 bytes those tokens stand for, so it is comparable across tokenizers. Overall = the mean of the
languages' bits per byte (each language weighs alike, as the windows are shared equally among them)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aifactory.evaluate.validation import BPB_BATCH, ValidationSet


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module,
    validation: ValidationSet,
    device: torch.device,
    check: Callable[[float], None] | None = None,
) -> tuple[float | None, dict[str, float]]:
    """(overall, per language); None / {} when there are no windows."""
    windows, labels = validation.windows, validation.window_languages
    if windows.numel() == 0:
        return None, {}
    languages = sorted(set(labels)) or [""]
    index = torch.tensor([languages.index(name) for name in labels] or [0] * windows.size(0))
    bits = torch.zeros(len(languages), dtype=torch.float64)
    nbytes = torch.zeros(len(languages), dtype=torch.float64)
    token_bytes = validation.token_bytes
    for start in range(0, windows.size(0), BPB_BATCH):
        batch = windows[start : start + BPB_BATCH].to(device)
        targets = batch[:, 1:]
        nll = model(batch[:, :-1], targets, reduction="none").double().cpu()
        counted = token_bytes[targets.cpu()]
        at = index[start : start + batch.size(0)]
        bits.index_add_(0, at, (nll * (counted > 0)).sum(1) / math.log(2))
        nbytes.index_add_(0, at, counted.sum(1).double())
        if check is not None:
            check((start + batch.size(0)) / windows.size(0))
    per_language = {
        name: float(bits[i] / nbytes[i]) for i, name in enumerate(languages) if nbytes[i] > 0 and name
    }
    values = [float(bits[i] / nbytes[i]) for i in range(len(languages)) if nbytes[i] > 0]
    return (sum(values) / len(values) if values else None), per_language
