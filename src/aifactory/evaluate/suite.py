"""One full evaluation of one model: multiple-choice task, bits per byte, prompts, growth samples.

`evaluate(...)` returns the report (a JSON-able dict, what `aifactory eval --json` prints and what
`evaluation_runs.report` stores). It calls `progress(fraction, message)` as it goes and raises
EvalInterrupted as soon as `stop()` is true or `budget_sec` has run out; nothing is stored until the
whole report exists (store.save writes it in one transaction)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from aifactory.chat import evaluate as chat_evaluate
from aifactory.db.database import Database
from aifactory.evaluate import EvalInterrupted, bpb, generate, prompts, score, task, validation
from aifactory.evaluate.load import load_model
from aifactory.evaluate.target import Target
from aifactory.serve import catalog
from aifactory.settings import Settings

Progress = Callable[[float, str], None]
# Shares of the progress bar: multiple choice, bits per byte, prompts and growth samples.
SHARES = (0.55, 0.15, 0.3)


def evaluate(
    settings: Settings,
    db: Database,
    target: Target,
    *,
    device: torch.device | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
    budget_sec: float | None = None,
) -> dict[str, Any]:
    device = device or torch.device("cpu")
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)

    def check(base: float, share: float, what: str) -> Callable[[float], None]:
        def at(fraction: float) -> None:
            if stop is not None and stop():
                raise EvalInterrupted("the evaluation was stopped")
            if budget_sec is not None and time.perf_counter() - started > budget_sec:
                raise EvalInterrupted(f"the evaluation took longer than its budget of {budget_sec:.0f} s")
            report(base + share * fraction, what)

        return at

    meta = target.meta
    tokenizer_hash = str(meta.get("tokenizer_hash", ""))
    validation.generation_of(settings, tokenizer_hash)  # no tokenizer generation, no validation data
    model = load_model(target, device)
    tokenizer = catalog.tokenizer_for(settings, catalog.ModelEntry(target.name, target.directory, meta))
    seq_len = min(model.config.max_seq_len, int(meta.get("training", {}).get("seq_len") or 512))
    data = validation.load(settings, db, tokenizer_hash, seq_len)
    seconds: dict[str, float] = {}

    at = time.perf_counter()
    check(0.0, 0.0, "building the multiple-choice task")(0.0)
    mc_task = task.build(data.documents, data.version, settings.eval_mc_items)
    chosen = task.choose(model, mc_task, data.token_bytes, device, check(0.0, SHARES[0], "multiple choice"))
    per_language = task.accuracy(mc_task, chosen)
    accuracy = score.mean_accuracy(per_language)
    seconds["mc"] = time.perf_counter() - at

    at = time.perf_counter()
    overall_bpb, bpb_languages = bpb.bits_per_byte(
        model, data, device, check(SHARES[0], SHARES[1], "bits per byte")
    )
    seconds["bpb"] = time.perf_counter() - at

    at = time.perf_counter()
    prompt_list = prompts.load(settings)
    growth_list = prompts.GROWTH_PROMPTS
    tick = check(SHARES[0] + SHARES[1], SHARES[2], "prompts and growth samples")
    answers = generate.greedy(
        model, tokenizer, [p.prompt for p in prompt_list], settings.eval_max_tokens, device
    )
    tick(0.5)
    samples = generate.greedy(
        model, tokenizer, [text for _, _, text in growth_list], settings.eval_growth_tokens, device
    )
    tick(1.0)
    answered = []
    for prompt, (text, _) in zip(prompt_list, answers, strict=True):
        value, matched = prompts.keyword_score(prompt, text)
        answered.append(
            {
                "id": prompt.id,
                "language": prompt.language,
                "prompt": prompt.prompt,
                "output": text,
                "score": value,
                "matched": matched,
            }
        )
    growth = [
        {"id": prompt_id, "language": language, "prompt": text_prompt, "output": text}
        for (prompt_id, language, text_prompt), (text, _) in zip(growth_list, samples, strict=True)
    ]
    generated = len(prompt_list) * settings.eval_max_tokens + len(growth_list) * settings.eval_growth_tokens
    seconds["generation"] = time.perf_counter() - at

    # The chat part (issue #18): held-out conversations and the chat growth prompts, in the template.
    at = time.perf_counter()
    chat = None
    if chat_evaluate.has_chat_tokens(tokenizer):
        tick = check(SHARES[0] + SHARES[1], SHARES[2], "chat: held-out conversations")
        part = chat_evaluate.chat_part(settings, db, model, tokenizer, progress=tick)
        chat = None if part is None else {k: v for k, v in part.as_dict().items() if k != "growth"}
        growth += chat_evaluate.growth_answers(model, tokenizer, settings.eval_growth_tokens)
    seconds["chat"] = time.perf_counter() - at

    state = meta.get("state", {})
    return {
        "model": target.name,
        "checkpoint": str(meta.get("registry", {}).get("checkpoint") or target.directory.name),
        "version": target.version,
        "step": int(meta.get("step", 0)),
        "tokens_seen": int(state.get("tokens_seen") or 0),
        "digest": target.digest,
        "tokenizer_hash": tokenizer_hash,
        "dataset_version": str(meta.get("dataset_version", "")),
        "task_version": mc_task.version,
        "score": score.overall(accuracy, mc_task.chance),
        "mc": {
            "accuracy": accuracy,
            "chance": mc_task.chance,
            "items": len(mc_task),
            "languages": per_language,
            "skipped": mc_task.skipped,
        },
        "bpb": {"overall": overall_bpb, "languages": bpb_languages},
        "prompt_score": sum(p["score"] for p in answered) / len(answered) if answered else None,
        "prompts": answered,
        "growth": growth,
        "chat": chat,  # None: no held-out conversations (or no chat tokens)
        "work": {
            "scored_tokens": int(mc_task.choices.size + data.windows[:, 1:].numel()),
            "forward_tokens": int(task.sequences(mc_task).numel() + data.windows.numel()),
            "generated_tokens": generated,
        },
        "seconds": time.perf_counter() - started,
        "part_seconds": seconds,
    }
