"""Evaluation results in the database: one transaction per finished evaluation, and the reads of the
history, the growth samples and the score of a model. Does not import torch (the web process uses it)."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import evaluation_parts, evaluation_runs, growth_samples, prompt_results


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def save(db: Database, report: dict[str, Any], node_id: str = "") -> int:
    """Store a finished evaluation with all its parts in one transaction; returns the run id."""
    with db.begin() as conn:
        now = db.now_value(conn)
        run_id = int(
            conn.execute(
                evaluation_runs.insert()
                .values(
                    model=str(report["model"])[:64],
                    checkpoint=str(report["checkpoint"])[:255],
                    version=report.get("version"),
                    step=int(report["step"]),
                    tokens_seen=int(report.get("tokens_seen") or 0),
                    digest=str(report["digest"]),
                    task_version=str(report["task_version"]),
                    score=float(report["score"]),
                    mc_accuracy=float(report["mc"]["accuracy"]),
                    mc_chance=float(report["mc"]["chance"]),
                    bpb=_finite(report["bpb"]["overall"]),
                    prompt_score=_finite(report.get("prompt_score")),
                    report=report,
                    seconds=float(report["seconds"]),
                    node_id=node_id,
                    created_at=now,
                )
                .returning(evaluation_runs.c.id)
            ).scalar_one()
        )
        parts = [
            {
                "run_id": run_id,
                "part": "mc",
                "language": "",
                "value": report["mc"]["accuracy"],
                "chance": report["mc"]["chance"],
                "items": report["mc"]["items"],
            }
        ]
        for language, figures in sorted(report["mc"]["languages"].items()):
            parts.append(
                {
                    "run_id": run_id,
                    "part": "mc",
                    "language": language,
                    "value": figures["accuracy"],
                    "chance": figures["chance"],
                    "items": figures["items"],
                }
            )
        parts.append(
            {
                "run_id": run_id,
                "part": "bpb",
                "language": "",
                "value": _finite(report["bpb"]["overall"]),
                "chance": None,
                "items": 0,
            }
        )
        for language, value in sorted(report["bpb"]["languages"].items()):
            parts.append(
                {
                    "run_id": run_id,
                    "part": "bpb",
                    "language": language,
                    "value": _finite(value),
                    "chance": None,
                    "items": 0,
                }
            )
        chat = report.get("chat")
        if chat:  # chat tuning's part: assistant-token loss and template adherence on held-out chats
            for part, value, items in (
                ("chat_loss", chat["assistant_loss"], chat["assistant_tokens"]),
                ("chat_adherence", chat["template_adherence"], chat["conversations"]),
            ):
                parts.append(
                    {
                        "run_id": run_id,
                        "part": part,
                        "language": "",
                        "value": _finite(value),
                        "chance": None,
                        "items": items,
                    }
                )
        conn.execute(evaluation_parts.insert(), parts)
        if report["prompts"]:
            conn.execute(
                prompt_results.insert(),
                [
                    {
                        "run_id": run_id,
                        "prompt_id": p["id"],
                        "language": p["language"],
                        "prompt": p["prompt"],
                        "output": p["output"],
                        "score": p["score"],
                        "matched": p["matched"],
                    }
                    for p in report["prompts"]
                ],
            )
        if report["growth"]:
            conn.execute(
                growth_samples.insert(),
                [
                    {
                        "run_id": run_id,
                        "step": int(report["step"]),
                        "prompt_id": g["id"],
                        "language": g["language"],
                        "prompt": g["prompt"],
                        "output": g["output"],
                        "created_at": now,
                    }
                    for g in report["growth"]
                ],
            )
    return run_id


RUN_COLUMNS = (
    "id",
    "model",
    "checkpoint",
    "version",
    "step",
    "tokens_seen",
    "task_version",
    "score",
    "mc_accuracy",
    "mc_chance",
    "bpb",
    "prompt_score",
    "seconds",
    "created_at",
)


def list_runs(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The latest evaluations, newest first, each with its parts and prompt results."""
    columns = [evaluation_runs.c[name] for name in RUN_COLUMNS]
    with db.read() as conn:
        runs = [
            dict(row._mapping)
            for row in conn.execute(sa.select(*columns).order_by(evaluation_runs.c.id.desc()).limit(limit))
        ]
        ids = [run["id"] for run in runs]
        parts: dict[int, list[dict[str, Any]]] = {run_id: [] for run_id in ids}
        answers: dict[int, list[dict[str, Any]]] = {run_id: [] for run_id in ids}
        if ids:
            query = sa.select(evaluation_parts).where(evaluation_parts.c.run_id.in_(ids))
            for row in conn.execute(query.order_by(evaluation_parts.c.id)):
                item = dict(row._mapping)
                parts[item.pop("run_id")].append(
                    {k: item[k] for k in ("part", "language", "value", "chance", "items")}
                )
            query = sa.select(prompt_results).where(prompt_results.c.run_id.in_(ids))
            for row in conn.execute(query.order_by(prompt_results.c.id)):
                item = dict(row._mapping)
                run_id = item.pop("run_id")
                item.pop("id")
                answers[run_id].append(item)
    for run in runs:
        run["parts"], run["prompts"] = parts[run["id"]], answers[run["id"]]
    return runs


def growth(db: Database, limit_per_prompt: int = 200) -> list[dict[str, Any]]:
    """Per growth prompt, its answers across evaluations, oldest first."""
    out: dict[str, dict[str, Any]] = {}
    query = sa.select(growth_samples).order_by(growth_samples.c.id)
    with db.read() as conn:
        for row in conn.execute(query):
            entry = out.setdefault(
                row.prompt_id,
                {"prompt_id": row.prompt_id, "language": row.language, "prompt": row.prompt, "samples": []},
            )
            entry["samples"].append(
                {"run_id": row.run_id, "step": row.step, "output": row.output, "created_at": row.created_at}
            )
    for entry in out.values():
        entry["samples"] = entry["samples"][-limit_per_prompt:]
    return list(out.values())


def score_of(db: Database, digest: str, task_version: str | None = None) -> dict[str, Any] | None:
    """The newest evaluation of these weights (on `task_version` when given): id, score, task_version."""
    query = sa.select(
        evaluation_runs.c.id,
        evaluation_runs.c.score,
        evaluation_runs.c.task_version,
        evaluation_runs.c.report,
    ).where(evaluation_runs.c.digest == digest)
    if task_version is not None:
        query = query.where(evaluation_runs.c.task_version == task_version)
    with db.read() as conn:
        row = conn.execute(query.order_by(evaluation_runs.c.id.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def newest_task_version(db: Database) -> str | None:
    with db.read() as conn:
        return conn.execute(
            sa.select(evaluation_runs.c.task_version).order_by(evaluation_runs.c.id.desc()).limit(1)
        ).scalar()
