"""The model card of a version: model_card.json and MODEL_CARD.md, generated from the checkpoint's
meta, its evaluation report and the dataset version it learned from."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import dataset_versions

LIMITS = (
    "A small language model trained from scratch on crawled web text: it continues text, it is not "
    "instruction-tuned unless stated, and it can state false things fluently.",
    "It knows only what its training data contained, up to the date of its dataset version.",
    "Scores are measured on held-out documents of the same crawl (docs/evaluation.md); they say how well it "
    "models this kind of text, not how well it answers questions in general.",
)


def dataset_facts(db: Database, dataset_version: str) -> dict[str, Any]:
    """What the dataset version says about the data: sources, documents, what policies excluded."""
    tag = "-".join(dataset_version.split("-")[:2])  # g1-v3-1a2b3c4d -> g1-v3
    with db.read() as conn:
        row = conn.execute(sa.select(dataset_versions).where(dataset_versions.c.tag == tag)).first()
    if row is None:
        return {"version": dataset_version}
    return {
        "version": dataset_version,
        "documents": int(row.documents),
        "train_tokens": int(row.train_tokens),
        "val_tokens": int(row.val_tokens),
        "sources": row.per_source or {},
        "excluded_by_policies_and_opt_outs": int(row.blocked),
        "filtered_by_quality": int(row.filtered),
        "duplicates_removed": int(row.duplicates),
    }


def build(meta: dict[str, Any], report: dict[str, Any] | None, data: dict[str, Any], version: int) -> dict:
    state = meta.get("state", {})
    scores = None
    if report:
        scores = {
            "score": report.get("score"),
            "task_version": report.get("task_version"),
            "mc_accuracy": report.get("mc", {}).get("accuracy"),
            "mc_chance": report.get("mc", {}).get("chance"),
            "mc_languages": report.get("mc", {}).get("languages"),
            "bpb": report.get("bpb", {}).get("overall"),
            "bpb_languages": report.get("bpb", {}).get("languages"),
            "prompt_score": report.get("prompt_score"),
        }
    return {
        "name": f"aifactory v{version}",
        "architecture": {"family": "llama", **meta.get("model", {})},
        "parameters": meta.get("parameters"),
        "step": meta.get("step"),
        "tokens_seen": state.get("tokens_seen"),
        "training": {**meta.get("training", {}), "saved_at": meta.get("saved_at")},
        "tokenizer_hash": meta.get("tokenizer_hash"),
        "languages": sorted((report or {}).get("mc", {}).get("languages", {})) or None,
        "data": data,
        "licences": "as published by each source (see the data sources); no licence is inferred here",
        "scores": scores,
        "known_limits": list(LIMITS),
    }


def markdown(card: dict[str, Any]) -> str:
    arch, data, scores = card["architecture"], card["data"], card["scores"]
    lines = [
        f"# {card['name']}",
        "",
        "## Model",
        f"- Llama-style decoder, {arch.get('n_layer')} layers, width {arch.get('n_embd')}, "
        f"{arch.get('n_head')} heads, vocabulary {arch.get('vocab_size')}, context {arch.get('max_seq_len')}",
        f"- {card['parameters'] or 0:,} parameters; step {card['step'] or 0:,}, "
        f"{card['tokens_seen'] or 0:,} tokens seen",
        f"- trained on {card['training'].get('device', '?')} ({card['training'].get('precision', '?')})",
        "",
        "## Data",
        f"- dataset version {data.get('version')}: {data.get('documents', '?')} documents, "
        f"{data.get('train_tokens', '?')} training tokens",
        f"- languages: {', '.join(card['languages'] or []) or 'unknown'}",
        f"- pages excluded by policies and opt-outs: {data.get('excluded_by_policies_and_opt_outs', '?')}",
        f"- sources: {', '.join(sorted(data.get('sources', {}))) or 'unknown'}",
        f"- licences: {card['licences']}",
        "",
        "## Scores",
    ]
    if scores:
        lines.append(f"- score {scores['score']:.3f} on task {scores['task_version']} (docs/evaluation.md)")
        lines.append(
            f"- multiple-choice accuracy {scores['mc_accuracy']:.3f} (chance {scores['mc_chance']:.2f})"
        )
        if scores["bpb"] is not None:
            lines.append(f"- bits per byte {scores['bpb']:.3f}")
    else:
        lines.append("- not evaluated")
    lines += ["", "## Known limits", *(f"- {limit}" for limit in card["known_limits"]), ""]
    return "\n".join(lines)
