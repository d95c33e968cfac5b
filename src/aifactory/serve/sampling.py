"""Choosing the next token from a row of logits: penalties, bias, temperature, top-k, top-p, seed.

Order (as in Hugging Face and llama.cpp): logit bias, repetition penalty over the last `repeat_last_n`
tokens (HF's rule: positive logits divided, negative ones multiplied), presence/frequency penalties over
the generated tokens (OpenAI's rule), then temperature 0 = greedy, or temperature scaling, top-k, top-p
and a draw from the request's own generator, so the same seed gives the same text whatever else runs.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_TOP_LOGPROBS = 20


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    repeat_last_n: int = 64  # window of the repetition penalty (prompt included); -1 = everything
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SamplingParams:
        data = dict(data or {})
        bias = {int(token): float(value) for token, value in (data.pop("logit_bias", None) or {}).items()}
        known = {name for name in cls.__dataclass_fields__ if name != "logit_bias"}
        values = {name: value for name, value in data.items() if name in known and value is not None}
        return cls(logit_bias=bias, **values)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def plain(self) -> bool:
        """No penalty or bias: the logits are used as the model gives them."""
        return (
            self.repetition_penalty == 1.0
            and self.presence_penalty == 0.0
            and self.frequency_penalty == 0.0
            and not self.logit_bias
        )


class Sampler:
    """One request's sampling state: its parameters and its own random generator."""

    def __init__(self, params: SamplingParams, vocab_size: int) -> None:
        self.params = params
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
        self.generator = torch.Generator().manual_seed(int(seed) % (2**63))
        self.vocab_size = vocab_size
        self.bias: torch.Tensor | None = None
        if params.logit_bias:
            bias = torch.zeros(vocab_size)
            for token, value in params.logit_bias.items():
                if 0 <= token < vocab_size:
                    bias[token] = value
            self.bias = bias

    def process(self, logits: torch.Tensor, context: list[int], generated: list[int]) -> torch.Tensor:
        """Bias and penalties applied to one row of fp32 logits (a new tensor)."""
        p = self.params
        logits = logits.float().clone()
        if self.bias is not None:
            logits += self.bias.to(logits.device)
        if p.repetition_penalty != 1.0:
            window = (
                context if p.repeat_last_n < 0 else context[-p.repeat_last_n :] if p.repeat_last_n else []
            )
            if window:
                ids = torch.tensor(sorted(set(window)), device=logits.device)
                values = logits[ids]
                logits[ids] = torch.where(
                    values > 0, values / p.repetition_penalty, values * p.repetition_penalty
                )
        if (p.presence_penalty or p.frequency_penalty) and generated:
            counts = Counter(generated)
            ids = torch.tensor(list(counts), device=logits.device)
            freq = torch.tensor([float(c) for c in counts.values()], device=logits.device)
            logits[ids] -= p.frequency_penalty * freq + p.presence_penalty
        return logits

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from processed logits."""
        p = self.params
        if p.greedy:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if 0 < p.top_k < logits.numel():
            values, ids = torch.topk(logits, p.top_k)
        else:
            values, ids = torch.sort(logits, descending=True)
        probs = torch.softmax(values, dim=-1)
        if p.top_p < 1.0:
            # Keep the smallest prefix whose mass reaches top_p (always at least the best token).
            keep = (torch.cumsum(probs, dim=-1) - probs) < p.top_p
            probs = probs * keep
        choice = torch.multinomial(probs.cpu(), 1, generator=self.generator)
        return int(ids[int(choice)])


def top_logprobs(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The k most likely (token, logprob) pairs of one row of log-probabilities."""
    if k <= 0:
        return []
    values, ids = torch.topk(logprobs, min(k, logprobs.numel()))
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
