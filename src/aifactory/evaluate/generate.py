"""Greedy decoding with the model's KV cache: what the prompts and the growth samples are answered with.

Greedy, so the same weights always give the same answer and growth samples are comparable across steps.
The prompt is plain text continued by the base model (no chat template: a pretrained model continues
text; the chat template is the serving side's business)."""

from __future__ import annotations

from typing import Any

import torch

from aifactory.model.llama import KVCache


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prompt: str, max_new: int, device: torch.device) -> tuple[str, int]:
    """(generated text without the prompt, tokens generated)."""
    limit = model.config.max_seq_len
    ids = tokenizer.encode(prompt)
    if tokenizer.bos_id >= 0:
        ids = [tokenizer.bos_id, *ids]
    max_new = max(1, min(max_new, limit - 1))
    ids = ids[-(limit - max_new) :]
    cache = KVCache(model.config, 1, len(ids) + max_new, device=device)
    logits = model(torch.tensor([ids], device=device), cache=cache)[:, -1]
    out: list[int] = []
    for _ in range(max_new):
        token = int(logits.argmax(-1))
        if token == tokenizer.eos_id:
            break
        out.append(token)
        if len(out) == max_new:
            break
        logits = model(torch.tensor([[token]], device=device), cache=cache)[:, -1]
    return tokenizer.decode(out), len(out)
