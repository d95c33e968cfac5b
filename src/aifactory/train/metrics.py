"""The training_metrics table: one row per logged step, thinned with age so it stays small forever;
beside it validation_metrics, one row per evaluation and language.

The trainer writes a row at most every TRAIN_LOG_EVERY_SEC seconds, and always after an evaluation.
`prune` keeps full detail of the per-step rows for the last hour, then one row per minute up to a day,
one per hour up to thirty days and one per day beyond (the last row of each bucket: the state it ended
in), and never more than MAX_ROWS of them: about 3,600 + 1,440 + 720 + 365 a year at one row a second.
Evaluation rows (those with a validation loss, and validation_metrics) are thinned on a schedule of
their own, EVAL_RETENTION, and capped apart (EVAL_MAX_ROWS): thinned together with the per-step rows,
the last row of an hour was nearly never an evaluation, and the week and month charts of validation
loss came out empty. The charts' ranges never need finer detail than what is kept for their age.

This module does not import torch: the web server reads the series through it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from aifactory.db.database import Database
from aifactory.db.schema import training_metrics, validation_metrics

HOUR, DAY = 3600, 86400
# (rows younger than this many seconds, are thinned to one per this many seconds); 0 = every row
RETENTION = ((HOUR, 0), (DAY, 60), (30 * DAY, HOUR), (math.inf, DAY))
MAX_ROWS = 20000
# Evaluations (a few an hour): all for a day, one per 10 minutes for a week, one per hour up to a
# year, one per day beyond: about 144 + 864 + 8,600 + 365 a year.
EVAL_RETENTION = ((DAY, 0), (7 * DAY, 600), (365 * DAY, HOUR), (math.inf, DAY))
EVAL_MAX_ROWS = 20000
# range name -> (window in seconds, None = everything; bucket seconds), as the original's chart ranges
RANGES: dict[str, tuple[int | None, int]] = {
    "10s": (600, 10),
    "hour": (HOUR, 60),
    "day": (DAY, 600),
    "week": (7 * DAY, HOUR),
    "month": (30 * DAY, 6 * HOUR),
    "year": (365 * DAY, DAY),
    "all": (None, DAY),
}
MAX_POINTS = 1200


@dataclass
class MetricRow:
    step: int
    epoch: float
    tokens_seen: int
    train_loss: float | None
    lr: float
    tokens_per_sec: float | None
    mfu: float | None
    val_loss: float | None = None
    val_bpb: float | None = None
    best_val_loss: float | None = None
    val_languages: dict[str, dict[str, float]] = field(default_factory=dict)  # language -> loss, bpb


def _finite(value: float | None) -> float | None:
    # NaN/inf are not JSON and mean "no value" on a chart.
    return value if value is not None and math.isfinite(value) else None


class MetricsWriter:
    """Writes rows for one node, at most one per `every_sec` unless `force` (an evaluation)."""

    def __init__(self, db: Database, node_id: str, every_sec: float) -> None:
        self.db, self.node_id, self.every_sec = db, node_id, every_sec
        self._last = -math.inf

    def write(self, row: MetricRow, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.every_sec:
            return False
        self._last = now
        values = {
            key: _finite(value) if isinstance(value, float) else value
            for key, value in vars(row).items()
            if key != "val_languages"
        }
        with self.db.begin() as conn:
            ts = self.db.now_value(conn)
            conn.execute(training_metrics.insert().values(ts=ts, node_id=self.node_id, **values))
            if row.val_loss is not None and row.val_languages:
                conn.execute(
                    validation_metrics.insert(),
                    [
                        {
                            "ts": ts,
                            "node_id": self.node_id,
                            "step": row.step,
                            "language": language,
                            "val_loss": _finite(figures.get("loss")),
                            "val_bpb": _finite(figures.get("bpb")),
                        }
                        for language, figures in sorted(row.val_languages.items())
                    ],
                )
        return True


def prune(db: Database) -> int:
    """Thin old rows (per-step rows by RETENTION, evaluations by EVAL_RETENTION) and cap each kind;
    returns the rows deleted."""
    evaluation = training_metrics.c.val_loss.is_not(None)
    return (
        _prune(db, training_metrics, (), sa.not_(evaluation), RETENTION, MAX_ROWS)
        + _prune(db, training_metrics, (), evaluation, EVAL_RETENTION, EVAL_MAX_ROWS)
        + _prune(db, validation_metrics, ("language",), sa.true(), EVAL_RETENTION, EVAL_MAX_ROWS * 8)
    )


def _prune(
    db: Database,
    t: sa.Table,
    keys: tuple[str, ...],
    kind: sa.ColumnElement[bool],
    retention: tuple[tuple[float, int], ...],
    max_rows: int,
) -> int:
    """Thin the rows of `t` matching `kind` to one per bucket of `retention` and cap them at `max_rows`."""
    deleted = 0
    with db.begin() as conn:
        now = db.now_value(conn)
        younger = 0.0
        for age, bucket in retention:
            if bucket:
                in_tier = sa.and_(
                    kind, t.c.ts < now - younger, t.c.ts >= now - age if math.isfinite(age) else sa.true()
                )
                last_of_bucket = (
                    sa.select(sa.func.max(t.c.id))
                    .where(in_tier)
                    .group_by(
                        t.c.node_id, *(t.c[key] for key in keys), sa.cast(t.c.ts, sa.BigInteger) // bucket
                    )
                )
                result = conn.execute(t.delete().where(in_tier, t.c.id.not_in(last_of_bucket)))
                deleted += result.rowcount or 0
            younger = age
        count = conn.execute(sa.select(sa.func.count()).select_from(t).where(kind)).scalar_one()
        if count > max_rows:
            cutoff = conn.execute(
                sa.select(t.c.ts).where(kind).order_by(t.c.ts.desc()).offset(max_rows - 1).limit(1)
            )
            deleted += conn.execute(t.delete().where(kind, t.c.ts < cutoff.scalar_one())).rowcount or 0
    return deleted


def series(db: Database, range_name: str) -> tuple[int, list[dict[str, Any]]]:
    """(bucket seconds, points oldest first) for a chart range: per bucket the last step, epoch and
    tokens, the mean losses, learning rate, speed and MFU, and the lowest best validation loss."""
    window, bucket = RANGES[range_name]
    t = training_metrics
    bucket_of = sa.cast(t.c.ts, sa.BigInteger) // bucket
    query = (
        sa.select(
            sa.func.max(t.c.ts).label("ts"),
            sa.func.max(t.c.step).label("step"),
            sa.func.max(t.c.epoch).label("epoch"),
            sa.func.max(t.c.tokens_seen).label("tokens_seen"),
            sa.func.avg(t.c.train_loss).label("train_loss"),
            sa.func.avg(t.c.val_loss).label("val_loss"),
            sa.func.avg(t.c.val_bpb).label("val_bpb"),
            sa.func.min(t.c.best_val_loss).label("best_val_loss"),
            sa.func.avg(t.c.lr).label("lr"),
            sa.func.avg(t.c.tokens_per_sec).label("tokens_per_sec"),
            sa.func.avg(t.c.mfu).label("mfu"),
        )
        .group_by(bucket_of)
        .order_by(bucket_of.desc())
        .limit(MAX_POINTS)
    )
    if window is not None:
        query = query.where(t.c.ts >= db.now() - window)
    with db.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        for key in (
            "ts",
            "epoch",
            "train_loss",
            "val_loss",
            "val_bpb",
            "best_val_loss",
            "lr",
            "tokens_per_sec",
            "mfu",
        ):
            row[key] = None if row[key] is None else float(row[key])
        row["step"], row["tokens_seen"] = int(row["step"]), int(row["tokens_seen"])
    return bucket, rows[::-1]


def language_series(db: Database, range_name: str) -> dict[str, list[dict[str, Any]]]:
    """Per language, the validation points of a chart range (bucketed as `series`), oldest first."""
    window, bucket = RANGES[range_name]
    t = validation_metrics
    bucket_of = sa.cast(t.c.ts, sa.BigInteger) // bucket
    query = (
        sa.select(
            t.c.language,
            sa.func.max(t.c.ts).label("ts"),
            sa.func.max(t.c.step).label("step"),
            sa.func.avg(t.c.val_loss).label("val_loss"),
            sa.func.avg(t.c.val_bpb).label("val_bpb"),
        )
        .group_by(t.c.language, bucket_of)
        .order_by(bucket_of.desc())
        .limit(MAX_POINTS * 8)
    )
    if window is not None:
        query = query.where(t.c.ts >= db.now() - window)
    out: dict[str, list[dict[str, Any]]] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            point = {
                "ts": float(row.ts),
                "step": int(row.step),
                "val_loss": None if row.val_loss is None else float(row.val_loss),
                "val_bpb": None if row.val_bpb is None else float(row.val_bpb),
            }
            out.setdefault(row.language, []).append(point)
    return {language: points[:MAX_POINTS][::-1] for language, points in sorted(out.items())}
