"""Greedy decoding of all the evaluation's prompts as one batch, with the serving side's KV cache.

Greedy, so the same weights always give the same answer and growth samples are comparable across steps.
Each prompt is prefilled into its own slot, then every step decodes one token for all of them at their
own positions (serve/batch.py: the same arithmetic as the Transformer, tested there): len(prompts)
times fewer forward passes than one prompt at a time. A row keeps decoding after its end of text (its
tokens are cut there), so the batch keeps its shape. Prompts are plain text continued by the base model
(no chat template: a pretrained model continues text)."""

from __future__ import annotations

from typing import Any

import torch

from aifactory.serve.batch import ServingModel, SlotCache, decode, prefill


@torch.no_grad()
def greedy(
    model: Any, tokenizer: Any, texts: list[str], max_new: int, device: torch.device
) -> list[tuple[str, int]]:
    """Per prompt: (generated text without the prompt, tokens generated before the end of text)."""
    if not texts:
        return []
    limit = model.config.max_seq_len
    max_new = max(1, min(max_new, limit - 1))
    serving = ServingModel(model)
    cache = SlotCache(model.config, len(texts), device, next(model.parameters()).dtype)
    prompts = []
    for text in texts:
        ids = tokenizer.encode(text)
        if tokenizer.bos_id >= 0:
            ids = [tokenizer.bos_id, *ids]
        prompts.append(ids[-(limit - max_new) :])
    first = [prefill(serving, cache, row, ids, 0, all_logits=False) for row, ids in enumerate(prompts)]
    tokens = torch.cat(first).argmax(-1)
    positions = torch.tensor([len(ids) for ids in prompts], device=device)
    out = [tokens]
    for _ in range(max_new - 1):
        tokens = decode(serving, cache, tokens, positions).argmax(-1)
        positions = positions + 1
        out.append(tokens)
    generated = torch.stack(out, dim=1).tolist()
    answers = []
    for row in generated:
        if tokenizer.eos_id in row:
            row = row[: row.index(tokenizer.eos_id)]
        answers.append((tokenizer.decode(row), len(row)))
    return answers
