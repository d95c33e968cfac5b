"""The fault suite: what a factory left running for weeks meets, on SQLite and PostgreSQL.

kill -9 (or the OOM killer) and an immediate restart; SIGTERM to the trainer; a second master; a node
of another version. Every wait polls with a generous deadline: these pass on a loaded two-core machine.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from aifactory.cluster import engine_state
from aifactory.cluster.node import Node
from aifactory.db import Database, migrate
from aifactory.db.schema import training_metrics
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir
from tests.cluster.test_lifeline import gone
from tests.conftest import free_port, wait_for
from tests.processes import aifactory, start_factory, stop
from tests.sample_engines import TINY_TRAINER
from tests.train.tiny import TINY

ENGINES = ("ticker", "pooled", "procpool")


def ticks(db: Database, node_id: str) -> dict[str, float]:
    return {
        row["engine"]: (row["counters"] or {}).get("ticks", 0)
        for row in engine_state.list_states(db, node_id)
    }


def test_a_killed_node_restarts_at_once_resumes_and_leaves_nothing_behind(
    db: Database, tmp_path: Path
) -> None:
    settings = {
        "DATABASE_URL": db.url,
        "DATA_DIR": tmp_path / "data",
        "NODE_ID": "m1",
        "LOG_LEVEL": "warning",
    }
    port = free_port()
    first = start_factory(port, tmp_path, module="tests.node_process", **settings)
    try:
        api = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{api}/api/control", json={"action": "start"}, timeout=10).status_code == 200
        wait_for(
            lambda: all(ticks(db, "m1").get(name, 0) > 0 for name in ENGINES), 90, "every engine to tick"
        )
        # the pool worker of `pooled`, the engine process `procpool` and its pool worker, resource trackers
        children = psutil.Process(first.pid).children(recursive=True)
        assert len(children) >= 3, children
        first.send_signal(signal.SIGKILL)  # as the OOM killer does: no handler runs, no row is updated
        first.wait(10)
    finally:
        stop(first, signal.SIGKILL)
    before = ticks(db, "m1")

    second = start_factory(port, tmp_path, module="tests.node_process", **settings)  # at once, same id
    try:
        wait_for(
            lambda: all(ticks(db, "m1")[name] > before[name] for name in ENGINES), 90, "the engines to resume"
        )
        wait_for(
            lambda: all(gone(child.pid) for child in children), 60, "every process of the old node to end"
        )
    finally:
        output = stop(second)
    assert second.returncode == 0, output
    assert "already running" not in output


def test_sigterm_to_the_trainer_process_stops_it_and_saves_a_checkpoint(
    db: Database, make_settings: Any
) -> None:
    """systemd and `docker stop` send SIGTERM to every process: the trainer finishes its step and saves."""
    settings = make_settings(database_url=db.url, **TINY)
    node = Node(settings, db, [TINY_TRAINER], role="master", node_id="m1")
    node.start()
    try:
        engine_state.set_desired(db, "m1", "running", engine="trainer")
        wait_for(lambda: len(metric_steps(db)) >= 3, 120, "the trainer to take steps")
        trainer = node.runners["trainer"].pid
        assert trainer is not None and trainer != os.getpid()
        os.kill(trainer, signal.SIGTERM)
        wait_for(lambda: gone(trainer), 60, "the trainer to stop")
        engine_state.set_desired(db, "m1", "stopped", engine="trainer")
        latest = CheckpointStore(checkpoint_dir(settings)).load("latest").meta
        assert latest["step"] >= 3 and latest["step"] == metric_steps(db)[-1]  # nothing trained is lost
        row = engine_state.load(db, "m1", "trainer")
        assert row is not None and row["last_error"] == ""  # a clean stop, not a crash
    finally:
        node.stop(timeout=60)


def metric_steps(db: Database) -> list[int]:
    with db.read() as conn:
        query = sa.select(training_metrics.c.step).order_by(training_metrics.c.id)
        return list(conn.execute(query).scalars())


@pytest.mark.postgres
def test_a_second_master_on_one_postgresql_refuses_naming_the_first(pg_url: str, tmp_path: Path) -> None:
    common = {"DATABASE_URL": pg_url, "LOG_LEVEL": "warning"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_factory(free_port(), tmp_path / "a", NODE_ID="m1", DATA_DIR=tmp_path / "a", **common)
    try:
        second = aifactory(
            "up", cwd=tmp_path / "b", NODE_ID="m2", DATA_DIR=tmp_path / "b", PORT=free_port(), **common
        )
        assert second.returncode == 1
        message = second.stderr.strip()
        assert message.count("\n") == 0 and "Traceback" not in message, message
        assert f"node m1 (pid {first.pid} on " in message and "already running as the master" in message
        assert "aifactory worker" in message  # what to do instead
    finally:
        output = stop(first)
    assert first.returncode == 0, output
    # once the first has stopped, the second may start
    again = start_factory(free_port(), tmp_path / "b", NODE_ID="m2", DATA_DIR=tmp_path / "b", **common)
    stop(again)
    assert again.returncode == 0


@pytest.mark.postgres
def test_a_worker_on_another_schema_refuses_in_one_line(pg_url: str, tmp_path: Path) -> None:
    db = Database(pg_url)
    try:
        migrate.upgrade(db, "0005")  # an older schema: the master has not upgraded it yet
        older = aifactory("worker", cwd=tmp_path, DATABASE_URL=pg_url, NODE_ID="w1")
        assert older.returncode == 1 and older.stderr.strip().count("\n") == 0, older.stderr
        assert (
            f"schema revision 0005 but aifactory {__import__('aifactory').__version__} needs" in older.stderr
        )
        assert migrate.current_revision(db) == "0005"  # the worker did not migrate the shared schema
        migrate.upgrade(db)
        with db.begin() as conn:  # a newer aifactory migrated it
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        newer = aifactory("worker", cwd=tmp_path, DATABASE_URL=pg_url, NODE_ID="w1")
        assert newer.returncode == 1 and newer.stderr.strip().count("\n") == 0, newer.stderr
        assert (
            "schema revision 9999, newer than aifactory" in newer.stderr
            and "upgrade aifactory" in newer.stderr
        )
        master = aifactory("up", cwd=tmp_path, DATABASE_URL=pg_url, PORT=free_port())
        assert master.returncode == 1 and "newer than aifactory" in master.stderr
        assert "Traceback" not in older.stderr + newer.stderr + master.stderr
    finally:
        db.dispose()


def test_a_node_of_another_version_refuses_on_sqlite_too(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'aifactory.db'}")
    try:
        migrate.upgrade(db)
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        db.dispose()
    for command in (("up",), ("status",), ("crawl", "http://127.0.0.1:9/")):
        result = aifactory(*command, cwd=tmp_path, PORT=free_port())
        assert result.returncode == 1, (command, result.stderr)
        assert "schema revision 9999, newer than aifactory" in result.stderr, command
        assert result.stderr.strip().count("\n") == 0, result.stderr
