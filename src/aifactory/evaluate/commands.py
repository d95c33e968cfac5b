"""`aifactory eval`: evaluate one model and print the score and its parts (or the report as JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from aifactory.db.connect import opened_database
from aifactory.evaluate import EvalError
from aifactory.settings import Settings


def format_report(report: dict[str, Any]) -> str:
    mc, bpb = report["mc"], report["bpb"]
    lines = [
        f"model {report['model']} (checkpoint {report['checkpoint']}, step {report['step']:,})",
        f"score {report['score']:.3f}  (chance-adjusted multiple-choice accuracy, "
        f"task {report['task_version']})",
        f"multiple choice: accuracy {mc['accuracy']:.3f} on {mc['items']} items, chance {mc['chance']:.2f}",
    ]
    for language, figures in mc["languages"].items():
        lines.append(f"  {language}: {figures['accuracy']:.3f} on {figures['items']} items")
    for language, why in mc["skipped"].items():
        lines.append(f"  {language}: not scored ({why})")
    if bpb["overall"] is not None:
        per = ", ".join(f"{name} {value:.3f}" for name, value in bpb["languages"].items())
        lines.append(f"bits per byte {bpb['overall']:.3f}" + (f" ({per})" if per else ""))
    if report["prompt_score"] is not None:
        lines.append(f"prompts: keyword score {report['prompt_score']:.3f}")
        for prompt in report["prompts"]:
            lines.append(f"  [{prompt['score']:.2f}] {prompt['prompt']} -> {prompt['output'][:80]!r}")
    chat = report.get("chat")
    if chat:
        lines.append(
            f"chat: template adherence {chat['template_adherence']:.3f} ({chat['ended']} of "
            f"{chat['conversations']} held-out answers end their turn), assistant-token loss "
            f"{chat['assistant_loss']:.3f}"
        )
    lines.append("growth samples:")
    for sample in report["growth"]:
        lines.append(f"  {sample['prompt']} -> {sample['output'][:80]!r}")
    lines.append(f"took {report['seconds']:.1f} s")
    return "\n".join(lines)


def run_and_store(settings: Settings, db: Any, model: str | None, **options: Any) -> dict[str, Any]:
    """Evaluate `model`, store it when EVAL_SAVE_TO_DB; the report, with "run_id" when stored."""
    import torch

    from aifactory.evaluate import store, suite
    from aifactory.evaluate.target import resolve

    torch.set_num_threads(max(1, settings.eval_threads))
    target = resolve(settings, model)
    report = suite.evaluate(settings, db, target, **options)
    report["run_id"] = store.save(db, report) if settings.eval_save_to_db else None
    return report


def eval_command(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with opened_database(settings) as db:
        try:
            report = run_and_store(settings, db, args.checkpoint)
        except EvalError as exc:
            print(f"aifactory: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2), file=out)
    else:
        print(format_report(report), file=out)
        if report["run_id"] is not None:
            print(f"stored as evaluation run {report['run_id']}", file=out)
    return 0


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a model: score 0..1, multiple choice, bits per byte, prompts, growth samples",
        description="Evaluate a model on the frozen validation set (docs/evaluation.md) and print the score "
        "and its parts; stored in the database when EVAL_SAVE_TO_DB=1.",
    )
    parser.add_argument(
        "--checkpoint",
        default="best",
        metavar="NAME_OR_PATH",
        help="best (default), latest, production, vN, or a checkpoint or model version directory",
    )
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(func=eval_command)
