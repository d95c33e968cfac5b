"""Registering model versions and the registry's state (which version is production).

A version directory is written as `.vN.partial-<pid>`, fsynced and renamed to `vN`, then its row is
inserted: an interrupted registration leaves no `vN`, and its partial directory is removed by the next
registration. The same weights (sha256) are registered once: registering them again returns the version
they already have. Nothing here imports torch."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aifactory.cluster.membership import process_alive
from aifactory.db.database import Database
from aifactory.db.schema import model_promotions, model_registry, model_versions
from aifactory.evaluate import store
from aifactory.ops.backup import copy_hashed
from aifactory.registry import RegistryError, card, pointer
from aifactory.settings import Settings

WEIGHTS, META = "model.safetensors", "meta.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
GB = 1 << 30


def _fsync_tree(path: Path) -> None:
    for item in [*path.rglob("*"), path]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_partials(settings: Settings) -> None:
    """Remove partial version directories whose writer is gone."""
    root = pointer.models_root(settings)
    for path in root.glob(".v*.partial-*"):
        pid = path.name.split("partial-", 1)[-1].split("-")[0]
        if not pid.isdigit() or (int(pid) != os.getpid() and not process_alive(int(pid), None)):
            shutil.rmtree(path, ignore_errors=True)


def check_free_disk(settings: Settings, needed: int) -> None:
    root = pointer.models_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free - needed < settings.model_min_free_gb * GB:
        raise RegistryError(
            f"not enough free disk in {root}: {free / GB:.2f} GB free, {needed / GB:.2f} GB needed and "
            f"MODEL_MIN_FREE_GB={settings.model_min_free_gb} must stay free"
        )


def get(db: Database, version: int) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(model_versions).where(model_versions.c.version == version)).first()
    return dict(row._mapping) if row is not None else None


def by_digest(db: Database, digest: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(model_versions).where(model_versions.c.digest == digest)).first()
    return dict(row._mapping) if row is not None else None


def list_versions(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.select(model_versions).order_by(model_versions.c.version.desc()))
        ]


def register(
    settings: Settings,
    db: Database,
    source: Path,
    *,
    origin: str = "checkpoint",
    report: dict[str, Any] | None = None,
    node_id: str = "",
) -> dict[str, Any]:
    """Register the checkpoint (or model) directory `source` as a new version; its row."""
    from aifactory.serve.catalog import tokenizer_dir

    try:
        meta = json.loads((source / META).read_text())
        digest = str(meta["files"][WEIGHTS]["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{source} is not a complete checkpoint ({exc})") from None
    existing = by_digest(db, digest)
    if existing is not None:
        return existing
    tokenizer = tokenizer_dir(settings, str(meta.get("tokenizer_hash", "")))
    if tokenizer is None:
        raise RegistryError(f"the tokenizer of {source} ({str(meta.get('tokenizer_hash'))[:16]}) is missing")
    try:
        size = (source / WEIGHTS).stat().st_size
    except OSError as exc:
        raise RegistryError(f"{source} is not a complete checkpoint ({exc})") from None
    check_free_disk(settings, size + sum((tokenizer / f).stat().st_size for f in TOKENIZER_FILES))
    clean_partials(settings)
    root = pointer.models_root(settings)
    data = card.dataset_facts(db, str(meta.get("dataset_version", "")))
    with db.read() as conn:
        number = int(conn.execute(sa.select(sa.func.max(model_versions.c.version))).scalar() or 0) + 1
    while True:
        final = pointer.version_dir(settings, number)
        if final.exists():
            number += 1
            continue
        partial = root / f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "tokenizer").mkdir(parents=True)
        # Copied and hashed in one streamed pass: weights of several GB never sit in memory.
        size, copied = copy_hashed(source / WEIGHTS, partial / WEIGHTS)
        if copied != digest:
            shutil.rmtree(partial, ignore_errors=True)
            raise RegistryError(f"{source / WEIGHTS} does not match its meta.json: the checkpoint is corrupt")
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer / name, partial / "tokenizer" / name)
        version_meta = {
            **meta,
            "files": {WEIGHTS: meta["files"][WEIGHTS]},
            "registry": {"version": number, "origin": origin, "checkpoint": source.name},
        }
        (partial / META).write_text(json.dumps(version_meta, indent=2))
        (partial / "eval.json").write_text(json.dumps(report or {}, ensure_ascii=False, indent=2))
        model_card = card.build(version_meta, report, data, number)
        (partial / "model_card.json").write_text(json.dumps(model_card, ensure_ascii=False, indent=2))
        (partial / "MODEL_CARD.md").write_text(card.markdown(model_card))
        _fsync_tree(partial)
        try:
            os.rename(partial, final)  # fails when another registration took this number meanwhile
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            number += 1
            continue
        break
    row = {
        "version": number,
        "digest": digest,
        "origin": origin,
        "checkpoint": source.name,
        "step": int(meta.get("step", 0)),
        "tokenizer_hash": str(meta.get("tokenizer_hash", "")),
        "dataset_version": str(meta.get("dataset_version", "")),
        "parameters": int(meta.get("parameters", 0)),
        "size_bytes": size,
        "card": model_card,
        "node_id": node_id,
    }
    try:
        with db.begin() as conn:
            conn.execute(model_versions.insert().values(**row, created_at=db.now_value(conn)))
    except sa.exc.IntegrityError:
        shutil.rmtree(final, ignore_errors=True)  # the same weights were registered meanwhile
        existing = by_digest(db, digest)
        if existing is None:
            raise RegistryError(f"version v{number} was registered twice at once; try again") from None
        return existing
    return get(db, number) or row


def listing(db: Database) -> dict[str, Any]:
    """What GET /api/models answers: the versions, newest first, with scores and which is production."""
    current = state(db)
    out = []
    for row in list_versions(db):
        # The newest evaluation of its weights (it may have been evaluated after it was registered).
        newest = store.score_of(db, row["digest"])
        scores = {"score": newest["score"], "task_version": newest["task_version"]} if newest else {}
        out.append(
            {
                "version": row["version"],
                "name": f"v{row['version']}",
                "origin": row["origin"],
                "checkpoint": row["checkpoint"],
                "step": row["step"],
                "score": scores.get("score"),
                "task_version": scores.get("task_version"),
                "parameters": row["parameters"],
                "size_bytes": row["size_bytes"],
                "created_at": row["created_at"],
                "deleted": row["deleted_at"] is not None,
                "production": row["version"] == current["production"],
                "card": row["card"],
            }
        )
    return {"production": current["production"], "previous": current["previous"], "versions": out}


# --- the registry's state -----------------------------------------------------------------------------
def state(db: Database) -> dict[str, Any]:
    """{"production", "previous", "revision"} (the row is created on first use)."""
    with db.begin() as conn:
        row = conn.execute(sa.select(model_registry).where(model_registry.c.id == 1)).first()
        if row is None:
            with contextlib.suppress(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(model_registry.insert().values(id=1, revision=0, updated_at=db.now_value(conn)))
            row = conn.execute(sa.select(model_registry).where(model_registry.c.id == 1)).one()
    return {"production": row.production, "previous": row.previous, "revision": int(row.revision)}


def move(db: Database, expected_revision: int, production: int | None, previous: int | None) -> bool:
    """Compare-and-set: move production only if nobody moved it since `expected_revision` was read."""
    with db.begin() as conn:
        result = conn.execute(
            model_registry.update()
            .where(model_registry.c.id == 1, model_registry.c.revision == expected_revision)
            .values(
                production=production,
                previous=previous,
                revision=expected_revision + 1,
                updated_at=db.now_value(conn),
            )
        )
        return bool(result.rowcount)


def record(db: Database, action: str, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(model_promotions.insert().values(action=action, created_at=db.now_value(conn), **values))


def history(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    query = sa.select(model_promotions).order_by(model_promotions.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def previous_of(db: Database, version: int) -> int | None:
    """The version that was production before `version` last became production."""
    query = (
        sa.select(model_promotions.c.previous)
        .where(model_promotions.c.action.in_(("promote", "rollback")), model_promotions.c.version == version)
        .order_by(model_promotions.c.id.desc())
        .limit(1)
    )
    with db.read() as conn:
        return conn.execute(query).scalar()


def apply_retention(settings: Settings, db: Database) -> list[int]:
    """Delete version directories beyond production, its rollback target and the last N; returns them."""
    current = state(db)
    live = [v for v in list_versions(db) if v["deleted_at"] is None]
    keep = {current["production"], current["previous"]}
    keep |= {v["version"] for v in live[: settings.model_keep_versions]}
    removed = []
    for version in live:
        if version["version"] in keep:
            continue
        shutil.rmtree(pointer.version_dir(settings, version["version"]), ignore_errors=True)
        with db.begin() as conn:
            conn.execute(
                model_versions.update()
                .where(model_versions.c.version == version["version"])
                .values(deleted_at=db.now_value(conn))
            )
        removed.append(version["version"])
    return removed
