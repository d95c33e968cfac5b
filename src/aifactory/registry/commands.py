"""`aifactory models`, `aifactory models register`, `aifactory promote [--force]`, `aifactory rollback`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aifactory.db.connect import opened_database
from aifactory.registry import PromotionRefused, RegistryError
from aifactory.settings import Settings


def models_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.registry import versions

    with opened_database(settings) as db:
        data = versions.listing(db)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    if not data["versions"]:
        print("no model version registered yet (`aifactory models register` or `aifactory promote`)")
    for item in data["versions"]:
        mark = "*" if item["production"] else " "
        score = "unscored" if item["score"] is None else f"score {item['score']:.3f}"
        gone = "  (deleted by retention)" if item["deleted"] else ""
        print(f"{mark} {item['name']:>5}  step {item['step']:>9,}  {score}  {item['checkpoint']}{gone}")
    if data["production"] is not None:
        print(
            f"production: v{data['production']}; rollback target: "
            f"{'v' + str(data['previous']) if data['previous'] is not None else 'none'}"
        )
    return 0


def register_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.evaluate import EvalError
    from aifactory.evaluate.target import resolve
    from aifactory.registry import gate, versions

    with opened_database(settings) as db:
        try:
            target = resolve(settings, args.checkpoint)
            report = gate.scored(settings, db, target) if args.evaluate else None
            row = versions.register(settings, db, target.directory, report=report)
        except (EvalError, RegistryError) as exc:
            print(f"aifactory: {exc}", file=sys.stderr)
            return 1
    print(f"registered {target.directory.name} as v{row['version']}")
    return 0


def promote_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.registry import gate

    with opened_database(settings) as db:
        try:
            result = gate.promote(settings, db, args.checkpoint, force=args.force or None)
        except PromotionRefused as exc:
            print(f"aifactory: promotion refused: {exc.rule}", file=sys.stderr)
            print(json.dumps(exc.details, indent=2), file=sys.stderr)
            return 1
        except RegistryError as exc:
            print(f"aifactory: {exc}", file=sys.stderr)
            return 1
    print(f"v{result['version']} is production ({result['rule']})")
    return 0


def rollback_command(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.registry import gate

    with opened_database(settings) as db:
        try:
            result = gate.rollback(settings, db)
        except RegistryError as exc:
            print(f"aifactory: {exc}", file=sys.stderr)
            return 1
    print(f"production is v{result['version']} again (was v{result['rolled_back_from']})")
    return 0


def add_parsers(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="the registered model versions and which is production",
        description="List the model versions (newest first) with their scores; * marks production.",
    )
    models.add_argument("--json", action="store_true", help="print the listing as JSON")
    models.set_defaults(func=models_command)
    models_sub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    register = models_sub.add_parser(
        "register",
        help="register a checkpoint as a new immutable model version",
        description="Copy a checkpoint into DATA_DIR/models/vN with its tokenizer, eval report and model "
        "card.",
    )
    register.add_argument(
        "--checkpoint", default="best", metavar="NAME_OR_PATH", help="best (default), latest or a path"
    )
    register.add_argument(
        "--no-evaluate", dest="evaluate", action="store_false", help="register without a score"
    )
    register.set_defaults(func=register_command)

    promote = sub.add_parser(
        "promote",
        help="promote the best checkpoint to production through the gate",
        description="Evaluate the candidate if it has no score, then promote it only when its score >= "
        "PROMOTION_MIN_SCORE and it is not worse than production (docs/evaluation.md).",
    )
    promote.add_argument(
        "--checkpoint", default="best", metavar="NAME_OR_PATH", help="best (default), latest or a path"
    )
    promote.add_argument("--force", action="store_true", help="promote even when the gate refuses (recorded)")
    promote.set_defaults(func=promote_command)

    rollback = sub.add_parser("rollback", help="return production to the previous version")
    rollback.set_defaults(func=rollback_command)
