"""training_metrics: written at a bounded rate, thinned with age, served as chart series (SQLite and PG)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from aifactory.cluster.node import Node
from aifactory.db import Database
from aifactory.db.schema import training_metrics, validation_metrics
from aifactory.train import metrics
from aifactory.train.metrics import MetricRow, MetricsWriter
from aifactory.web.app import create_app
from aifactory.web.context import AppContext

HOUR, DAY = 3600, 86400


def row(step: int, **values: float) -> MetricRow:
    return MetricRow(step=step, epoch=step / 100, tokens_seen=step * 1000, train_loss=3.0, lr=1e-3,
                     tokens_per_sec=5000.0, mfu=0.3, **values)  # fmt: skip


def insert_at(db: Database, ages: list[float], node_id: str = "n") -> None:
    """Rows as if written `age` seconds ago."""
    with db.begin() as conn:
        now = db.now_value(conn)
        conn.execute(
            training_metrics.insert(),
            [
                dict(
                    ts=now - age,
                    node_id=node_id,
                    step=i,
                    epoch=0.0,
                    tokens_seen=i,
                    train_loss=float(i),
                    lr=0.1,
                )
                for i, age in enumerate(ages)
            ],
        )


def count(db: Database, older_than: float = 0, younger_than: float = 1e12) -> int:
    with db.read() as conn:
        now = db.now_value(conn)
        t = training_metrics
        query = sa.select(sa.func.count()).where(t.c.ts <= now - older_than, t.c.ts > now - younger_than)
        return conn.execute(query).scalar_one()


def test_the_writer_keeps_to_its_rate_but_always_writes_evaluations(db: Database) -> None:
    writer = MetricsWriter(db, "node-a", every_sec=3600)
    assert writer.write(row(1)) is True
    assert writer.write(row(2)) is False  # within the interval
    assert writer.write(row(3, val_loss=2.5, val_bpb=3.6, best_val_loss=2.5), force=True) is True
    assert writer.write(row(4, val_loss=float("nan")), force=True) is True  # NaN is stored as no value
    with db.read() as conn:
        rows = conn.execute(sa.select(training_metrics).order_by(training_metrics.c.id)).mappings().all()
    assert [r["step"] for r in rows] == [1, 3, 4]
    assert rows[1]["val_bpb"] == 3.6 and rows[1]["node_id"] == "node-a" and rows[2]["val_loss"] is None


def test_prune_thins_rows_by_age_and_keeps_the_recent_hour_whole(db: Database) -> None:
    recent = [i * 10 for i in range(300)]  # last 50 minutes, every 10 s: all kept
    hours_ago = [2 * HOUR + i * 10 for i in range(360)]  # an hour, every 10 s: one per minute
    days_ago = [3 * DAY + i * 60 for i in range(600)]  # ten hours, every minute: one per hour
    months_ago = [40 * DAY + i * HOUR for i in range(72)]  # three days, hourly: one per day
    insert_at(db, recent + hours_ago + days_ago + months_ago)
    deleted = metrics.prune(db)
    assert count(db, younger_than=HOUR) == 300
    assert 60 <= count(db, older_than=HOUR, younger_than=DAY) <= 62
    assert 10 <= count(db, older_than=DAY, younger_than=30 * DAY) <= 12
    assert 3 <= count(db, older_than=30 * DAY) <= 4
    assert deleted == 1332 - count(db)
    assert metrics.prune(db) == 0  # thinning is idempotent


def test_the_table_never_exceeds_max_rows(db: Database, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_ROWS", 50)
    insert_at(db, [i for i in range(120)])  # all recent: only the cap applies
    metrics.prune(db)
    with db.read() as conn:
        steps = (
            conn.execute(sa.select(training_metrics.c.step).order_by(training_metrics.c.step)).scalars().all()
        )
    assert steps == list(range(50))  # the 50 newest (smallest age) rows


def test_series_aggregates_rows_into_buckets_oldest_first(db: Database) -> None:
    insert_at(db, [700, 650, 30, 25, 5])  # two old ones outside "10s" (last 10 minutes)
    bucket, points = metrics.series(db, "10s")
    assert bucket == 10 and 2 <= len(points) <= 3
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)
    assert points[-1]["step"] == 4 and points[-1]["train_loss"] == 4.0
    _, everything = metrics.series(db, "all")
    assert len(everything) == 1 and everything[0]["train_loss"] == 2.0 and everything[0]["step"] == 4


def test_api_serves_the_training_series(db: Database, make_settings) -> None:
    settings = make_settings(database_url=db.url)
    app = create_app(AppContext(settings, db, Node(settings, db, [], role="master", node_id="api-node")))
    MetricsWriter(db, "api-node", 0).write(row(7, val_loss=2.0, val_bpb=2.9, best_val_loss=2.0), force=True)
    with TestClient(app) as client:
        body = client.get("/api/metrics/training", params={"range": "hour"}).json()
        assert body["range"] == "hour" and body["bucket_sec"] == 60
        (point,) = body["series"]
        assert (point["step"], point["tokens_seen"], point["val_bpb"], point["mfu"]) == (7, 7000, 2.9, 0.3)
        assert client.get("/api/metrics/training").json()["range"] == "day"
        bad = client.get("/api/metrics/training", params={"range": "fortnight"})
        assert bad.status_code == 422 and "10s" in bad.text


def test_a_month_of_evaluation_history_survives_thinning(db: Database) -> None:
    """A month of training: a per-step row every 2 minutes and an evaluation every 10 (as the trainer
    writes them, interleaved in time). After thinning, every hour of the week chart and every 6 hours
    of the month chart still has its validation loss, per language too."""
    month = 30 * DAY
    with db.begin() as conn:
        now = db.now_value(conn)
        rows, languages = [], []
        for i, age in enumerate(range(month, 0, -120)):
            evaluation = i % 5 == 2  # every 10 minutes, never the last row of an hour
            rows.append(
                dict(
                    ts=now - age,
                    node_id="n",
                    step=i,
                    epoch=0.0,
                    tokens_seen=i,
                    train_loss=3.0,
                    lr=0.1,
                    val_loss=2.0 + age / month if evaluation else None,
                )
            )
            if evaluation:
                languages += [
                    dict(ts=now - age, node_id="n", step=i, language=name, val_loss=2.0, val_bpb=1.0)
                    for name in ("en", "ja")
                ]
        conn.execute(training_metrics.insert(), rows)
        conn.execute(validation_metrics.insert(), languages)
    metrics.prune(db)
    for range_name, buckets in (("week", 7 * 24), ("month", 30 * 4)):
        _, points = metrics.series(db, range_name)
        with_val = [p for p in points if p["val_loss"] is not None]
        assert len(with_val) >= buckets - 2, (range_name, len(with_val), len(points))
        per_language = metrics.language_series(db, range_name)
        assert set(per_language) == {"en", "ja"}
        assert all(len(series) >= buckets - 2 for series in per_language.values())
    assert metrics.prune(db) == 0  # idempotent


def test_evaluation_rows_do_not_count_against_the_per_step_cap(db: Database, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_ROWS", 50)
    insert_at(db, list(range(120)))
    MetricsWriter(db, "n", 0).write(row(500, val_loss=2.0), force=True)
    metrics.prune(db)
    with db.read() as conn:
        evaluations = conn.execute(
            sa.select(sa.func.count()).where(training_metrics.c.val_loss.is_not(None))
        ).scalar_one()
    assert evaluations == 1 and count(db) == 51
