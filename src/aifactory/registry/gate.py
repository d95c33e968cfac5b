"""The promotion gate and rollback: checks first, move after; a refusal never touches production.

promote(candidate):
  1. the candidate is evaluated unless it has a score on the current task version, and registered;
  2. refused unless score >= PROMOTION_MIN_SCORE;
  3. refused unless score >= production's score - PROMOTION_TOLERANCE, both on the same task version
     (production is evaluated on it when it has no such score; a production of another tokenizer is not
     comparable and only rule 2 applies);
  4. production moves by compare-and-set on the registry's revision: of two promotions at once one wins,
     the other is refused ("another promotion moved production meanwhile").
FORCE_PROMOTE=1 / force=True skips rules 2 and 3 and is recorded. This module runs in a process that may
import torch (an evaluation); the web process calls it through a child process (registry/worker.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from aifactory.db.database import Database
from aifactory.evaluate import EvalError, store
from aifactory.evaluate.target import Target, resolve
from aifactory.registry import PromotionRefused, RegistryError, pointer, versions
from aifactory.settings import Settings


def _current_task(settings: Settings, db: Database, target: Target) -> str:
    from aifactory.evaluate.task import task_version
    from aifactory.evaluate.validation import current_version

    return task_version(current_version(settings, db, str(target.meta.get("tokenizer_hash", ""))))


def scored(settings: Settings, db: Database, target: Target, node_id: str = "") -> dict[str, Any]:
    """The evaluation report of `target` on the current task version: stored, or measured now."""
    task = _current_task(settings, db, target)
    known = store.score_of(db, target.digest, task)
    if known is not None:
        return dict(known["report"])
    from aifactory.evaluate import suite

    report = suite.evaluate(settings, db, target)
    report["run_id"] = store.save(db, report, node_id)  # the gate's decisions need the score stored
    return report


@contextlib.contextmanager
def held(settings: Settings, target: Target, name: str | None = None) -> Iterator[Target]:
    """`target` with its files hard-linked under the models folder while the gate works on it.

    The trainer keeps only a few snapshots: the candidate's checkpoint directory can be deleted while it
    is being evaluated. The links keep its files (no copy, same disk) until the gate has registered it.
    The folder keeps the checkpoint's name, so the version still records where it came from. `name` is
    what the target was asked for by (best, latest): when its directory vanishes before it is linked,
    the name is looked up again."""
    if target.directory.parent == pointer.models_root(settings):
        yield target  # already a registered version: immutable
        return
    hold = pointer.models_root(settings) / f".hold-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for _ in range(3):
            try:
                shutil.copytree(target.directory, hold / target.directory.name, copy_function=_link)
                break
            except (OSError, shutil.Error):
                shutil.rmtree(hold, ignore_errors=True)
                if name is None:
                    raise EvalError(
                        f"the checkpoint {target.directory} was deleted; evaluate another"
                    ) from None
                target = resolve(settings, name)  # deleted or replaced under us: best has moved on
        else:
            raise EvalError(f"the checkpoint {target.directory.name} kept disappearing; try again")
        yield replace(target, directory=hold / target.directory.name)
    finally:
        shutil.rmtree(hold, ignore_errors=True)


def _link(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)  # another file system: a copy, still safe


def clean_holds(settings: Settings) -> None:
    """Remove the holds of gates that died mid-way."""
    from aifactory.cluster.membership import process_alive

    for path in pointer.models_root(settings).glob(".hold-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or (int(pid) != os.getpid() and not process_alive(int(pid), None)):
            shutil.rmtree(path, ignore_errors=True)


def promote(
    settings: Settings,
    db: Database,
    checkpoint: str | None = None,
    *,
    force: bool | None = None,
    node_id: str = "",
) -> dict[str, Any]:
    """Promote `checkpoint` (default best) to production, or raise PromotionRefused with the rule."""
    force = settings.force_promote if force is None else force
    clean_holds(settings)
    try:
        name = checkpoint or "best"
        with held(settings, resolve(settings, name), None if "/" in name else name) as candidate:
            return _promote(settings, db, candidate, force, node_id)
    except EvalError as exc:
        raise RegistryError(str(exc)) from None


def _promote(
    settings: Settings, db: Database, candidate: Target, force: bool, node_id: str
) -> dict[str, Any]:
    before = versions.state(db)
    try:
        report = scored(settings, db, candidate, node_id)
    except EvalError as exc:
        raise RegistryError(str(exc)) from None
    details: dict[str, Any] = {
        "candidate_score": report["score"],
        "production_score": None,
        "task_version": report["task_version"],
        "min_score": settings.promotion_min_score,
        "tolerance": settings.promotion_tolerance,
        "forced": force,
        "previous": before["production"],
    }
    try:
        version = versions.register(settings, db, candidate.directory, report=report, node_id=node_id)
    except RegistryError as exc:
        refuse(db, str(exc), details, node_id)
    number = int(version["version"])
    details["version"] = number
    if before["production"] == number:
        refuse(db, f"v{number} is already production", details, node_id)
    production_score, comparable = None, True
    if before["production"] is not None:
        production_dir = pointer.version_dir(settings, before["production"])
        try:
            production = resolve(settings, str(production_dir))
            if production.meta.get("tokenizer_hash") != candidate.meta.get("tokenizer_hash"):
                comparable = False
            else:
                production_score = float(scored(settings, db, production, node_id)["score"])
        except EvalError:
            comparable = False  # its directory or data is gone: nothing to compare with
        details["production_score"] = production_score
    score = float(report["score"])
    rules = []
    if score >= settings.promotion_min_score:
        rules.append(f"score {score:.3f} >= PROMOTION_MIN_SCORE {settings.promotion_min_score}")
    elif force:
        rules.append(f"forced below PROMOTION_MIN_SCORE {settings.promotion_min_score} (score {score:.3f})")
    else:
        refuse(
            db, f"score {score:.3f} < PROMOTION_MIN_SCORE {settings.promotion_min_score}", details, node_id
        )
    if production_score is not None:
        floor = production_score - settings.promotion_tolerance
        if score >= floor:
            rules.append(
                f"not worse than production v{before['production']} ({production_score:.3f} - tolerance)"
            )
        elif force:
            rules.append(
                f"forced although worse than production v{before['production']} ({production_score:.3f})"
            )
        else:
            refuse(
                db,
                f"score {score:.3f} is worse than production v{before['production']} {production_score:.3f} "
                f"minus PROMOTION_TOLERANCE {settings.promotion_tolerance}",
                details,
                node_id,
            )
    elif before["production"] is not None and not comparable:
        rules.append("production is not comparable (another tokenizer or gone): only the threshold applies")
    try:
        versions.check_free_disk(settings, 0)
    except RegistryError as exc:
        refuse(db, str(exc), details, node_id)
    if not versions.move(db, before["revision"], number, before["production"]):
        refuse(
            db,
            "another promotion or rollback moved production meanwhile; look again and retry",
            details,
            node_id,
        )
    pointer.write(settings, number, before["revision"] + 1)
    rule = "; ".join(rules)
    versions.record(
        db,
        "promote",
        version=number,
        previous=before["production"],
        forced=force,
        candidate_score=score,
        production_score=production_score,
        rule=rule,
        node_id=node_id,
    )
    versions.apply_retention(settings, db)
    return {**details, "promoted": True, "rule": rule}


def refuse(db: Database, rule: str, details: dict[str, Any], node_id: str) -> None:
    versions.record(
        db,
        "refused",
        version=details.get("version"),
        previous=details.get("previous"),
        forced=bool(details.get("forced")),
        candidate_score=details.get("candidate_score"),
        production_score=details.get("production_score"),
        rule=rule,
        node_id=node_id,
    )
    raise PromotionRefused(rule, details)


def rollback(settings: Settings, db: Database, node_id: str = "") -> dict[str, Any]:
    """Production back to its rollback target; PromotionRefused when there is none."""
    before = versions.state(db)
    target = before["previous"]
    details = {"version": target, "previous": before["production"]}
    if target is None:
        raise PromotionRefused("there is no previous production version to roll back to", details)
    if not pointer.version_dir(settings, target).is_dir():
        raise PromotionRefused(f"the rollback target v{target} is no longer on disk", details)
    behind = versions.previous_of(db, target)
    if not versions.move(db, before["revision"], target, behind):
        raise PromotionRefused("another promotion or rollback moved production meanwhile", details)
    pointer.write(settings, target, before["revision"] + 1)
    versions.record(
        db,
        "rollback",
        version=target,
        previous=behind,
        rule=f"rolled back from v{before['production']}",
        node_id=node_id,
    )
    return {"version": target, "previous": behind, "rolled_back_from": before["production"]}


def sync_pointer(settings: Settings, db: Database) -> None:
    """Rewrite the pointer file from the database (after a crash between the move and the file)."""
    current = versions.state(db)
    if (pointer.read(settings) or {}).get("version") != current["production"]:
        pointer.write(settings, current["production"], current["revision"])
