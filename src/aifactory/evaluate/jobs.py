"""Evaluations started through the API: an evaluation_jobs row and a process of its own.

The web process never evaluates (it would import torch and hold the event loop's cores): `start` checks
the request, inserts a running job and spawns a process that evaluates at low priority (os.nice, a few
threads), reports progress into the row and ends it done (with the run id) or failed. The process is
tied to the web process (lifeline): when the server stops or dies, the evaluation stops and, as any
interrupted evaluation, stores no run. One evaluation job at a time. This module does not import torch."""

from __future__ import annotations

import multiprocessing
import os
import socket
from typing import Any

import sqlalchemy as sa

from aifactory.cluster.membership import process_alive, process_started
from aifactory.db.database import Database
from aifactory.db.schema import evaluation_jobs
from aifactory.settings import Settings

NICE = 10
# A running job that has written no progress for this long is dead wherever it ran (its host may be
# gone: a recreated container has another hostname); evaluation phases report far more often.
STALE_SEC = 2 * 3600


class JobRunning(Exception):
    """An evaluation job is already running."""


def update(db: Database, job_id: int, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(
            evaluation_jobs.update()
            .where(evaluation_jobs.c.id == job_id, evaluation_jobs.c.status == "running")
            .values(**values, updated_at=db.now_value(conn))
        )


def current(db: Database) -> dict[str, Any] | None:
    """The newest job; a running one whose process is gone (on this host) is marked failed first."""
    with db.read() as conn:
        row = conn.execute(sa.select(evaluation_jobs).order_by(evaluation_jobs.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    job = dict(row._mapping)
    if job["status"] == "running" and _dead(db, job):
        update(
            db,
            job["id"],
            status="failed",
            error="the evaluation process ended without a result",
            message="failed",
            finished_at=db.clock(),
        )
        return current(db)
    return job


def _dead(db: Database, job: dict[str, Any]) -> bool:
    last = job["updated_at"] or job["created_at"]
    if db.clock() - last > STALE_SEC:
        return True
    if job["node_id"] != socket.gethostname():
        return False  # another host's process: only its silence tells
    if job["pid"] is None:
        return db.clock() - job["created_at"] > 60  # its starter died before it recorded the process
    return not process_alive(job["pid"], job["pid_started"])


def start(settings: Settings, db: Database, model: str) -> int:
    """Start evaluating `model` in a process of its own; JobRunning when one runs already."""
    job = current(db)
    if job is not None and job["status"] == "running":
        raise JobRunning(f"evaluation job {job['id']} of {job['model']} is still running")
    with db.begin() as conn:
        job_id = int(
            conn.execute(
                evaluation_jobs.insert()
                .values(
                    model=model,
                    status="running",
                    message="starting",
                    node_id=socket.gethostname(),
                    created_at=db.now_value(conn),
                )
                .returning(evaluation_jobs.c.id)
            ).scalar_one()
        )
    process = multiprocessing.get_context("spawn").Process(
        target=_job_process,
        args=(settings, job_id, os.getpid()),
        name=f"aifactory-eval-{job_id}",
        daemon=True,
    )
    try:
        process.start()
    except Exception as exc:
        update(
            db,
            job_id,
            status="failed",
            error=f"could not start: {exc}",
            message="failed",
            finished_at=db.clock(),
        )
        raise
    update(db, job_id, pid=process.pid, pid_started=process_started(process.pid))
    return job_id


def _job_process(settings: Settings, job_id: int, parent_pid: int) -> None:
    from aifactory.cluster import lifeline
    from aifactory.evaluate import EvalError
    from aifactory.evaluate.commands import run_and_store

    stop = lifeline.ProcessStop()
    # started from a web worker thread, which may end first: the watchdog alone ties it to the server
    lifeline.bind_engine_process(parent_pid, stop, settings.engine_stop_timeout_sec, death_signal=False)
    os.nice(NICE)
    db = Database(settings.resolved_database_url(), pool_size=1)
    try:

        def progress(fraction: float, message: str) -> None:
            update(db, job_id, progress=round(fraction, 4), message=message)

        try:
            report = run_and_store(settings, db, model_of(db, job_id), progress=progress, stop=stop.is_set)
        except EvalError as exc:
            update(db, job_id, status="failed", error=str(exc), message="failed", finished_at=db.clock())
            return
        except Exception as exc:  # any crash is the job's error, shown by GET /api/evals/status
            update(
                db,
                job_id,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                message="failed",
                finished_at=db.clock(),
            )
            raise
        update(
            db,
            job_id,
            status="done",
            progress=1.0,
            message=f"score {report['score']:.3f}",
            run_id=report["run_id"],
            finished_at=db.clock(),
        )
    finally:
        db.dispose()


def model_of(db: Database, job_id: int) -> str:
    with db.read() as conn:
        return str(
            conn.execute(
                sa.select(evaluation_jobs.c.model).where(evaluation_jobs.c.id == job_id)
            ).scalar_one()
        )
