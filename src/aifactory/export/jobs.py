"""Export jobs: a row per export or LoRA fine-tune asked for through the API, and the runner that does them.

The web process never does the work itself (it would hold the event loop's cores and import torch):
`JobRunner` is one long-lived thread of the web process that takes queued jobs one at a time, oldest
first, and runs each in a spawned process of its own (`worker.py`), which reports progress, result or
error into the job's row. One at a time, because an export or a fine-tune uses every core it gets.

Lifecycle: queued -> running -> done | failed | cancelled. A job asked to cancel is `cancelling` until
its process is gone. The process is tied to the web process (lifeline): when the server shuts down
or dies, it stops, removes its half-written output, and the job goes back to `queued`, to run again
from the start when the server is back (at most MAX_ATTEMPTS times in all). This module does not
import torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from typing import Any

import sqlalchemy as sa

from aifactory.db import Database, events
from aifactory.db.schema import export_jobs
from aifactory.settings import Settings

log = logging.getLogger("aifactory")

TARGETS = ("hf", "gguf", "ollama", "lmstudio", "lora")
ACTIVE = ("queued", "running", "cancelling")
MAX_ATTEMPTS = 3
POLL_SEC = 0.5


# --- the rows ----------------------------------------------------------------------------------------------
def create(db: Database, target: str, request: dict[str, Any]) -> int:
    with db.begin() as conn:
        row = conn.execute(
            export_jobs.insert()
            .values(
                target=target,
                status="queued",
                request=request,
                message="waiting to start",
                created_at=db.now(),
            )
            .returning(export_jobs.c.id)
        )
        return int(row.scalar_one())


def get(db: Database, job_id: int) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(export_jobs).where(export_jobs.c.id == job_id)).first()
    return dict(row._mapping) if row is not None else None


def list_jobs(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    query = sa.select(export_jobs).order_by(export_jobs.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def update(db: Database, job_id: int, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(
            export_jobs.update().where(export_jobs.c.id == job_id).values(**values, updated_at=db.now())
        )


def _set_if(db: Database, job_id: int, statuses: tuple[str, ...], **values: Any) -> bool:
    """Change the row only while its status is one of `statuses`; whether it did."""
    with db.begin() as conn:
        result = conn.execute(
            export_jobs.update()
            .where(export_jobs.c.id == job_id, export_jobs.c.status.in_(statuses))
            .values(**values, updated_at=db.now())
        )
        return bool(result.rowcount)


def report_progress(db: Database, job_id: int, fraction: float, message: str) -> None:
    _set_if(db, job_id, ("running",), progress=max(0.0, min(1.0, fraction)), message=message[:2000])


def finish(db: Database, job_id: int, result: dict[str, Any]) -> None:
    _set_if(
        db,
        job_id,
        ("running", "cancelling"),
        status="done",
        progress=1.0,
        message="done",
        result=result,
        finished_at=db.now(),
    )


def fail(db: Database, job_id: int, error: str) -> None:
    _set_if(
        db,
        job_id,
        ("queued", "running", "cancelling"),
        status="failed",
        error=error[:4000],
        message="failed",
        finished_at=db.now(),
    )


def cancel(db: Database, job_id: int) -> str | None:
    """Ask a job to stop: a queued one is cancelled at once, a running one once its process is gone.
    Returns the new status, or None when the job had already ended."""
    if _set_if(db, job_id, ("queued",), status="cancelled", message="cancelled", finished_at=db.now()):
        return "cancelled"
    if _set_if(db, job_id, ("running",), status="cancelling", message="cancelling"):
        return "cancelling"
    return None


def requeue_interrupted(db: Database, job_id: int, why: str) -> None:
    """A job whose process was stopped by a shutdown runs again later, unless it has had its tries."""
    job = get(db, job_id)
    if job is None:
        return
    if job["status"] == "cancelling":
        _set_if(db, job_id, ("cancelling",), status="cancelled", message="cancelled", finished_at=db.now())
    elif int(job["attempts"]) >= MAX_ATTEMPTS:
        fail(db, job_id, f"{why}; given up after {job['attempts']} attempts")
    else:
        _set_if(
            db,
            job_id,
            ("running",),
            status="queued",
            progress=0.0,
            message=f"{why}; will start again",
            pid=None,
        )


def recover(db: Database, node_id: str) -> int:
    """At start-up: jobs this node was running when it went away (kill -9, power cut) are queued again."""
    with db.read() as conn:
        ids = list(
            conn.execute(
                sa.select(export_jobs.c.id).where(
                    export_jobs.c.status.in_(("running", "cancelling")), export_jobs.c.node_id == node_id
                )
            ).scalars()
        )
    for job_id in ids:
        requeue_interrupted(db, int(job_id), "interrupted by a restart of the server")
    return len(ids)


def claim_next(db: Database, node_id: str) -> dict[str, Any] | None:
    """Mark the oldest queued job running on this node and return it (None when nothing waits)."""
    with db.read() as conn:
        job_id = conn.execute(
            sa.select(export_jobs.c.id)
            .where(export_jobs.c.status == "queued")
            .order_by(export_jobs.c.id)
            .limit(1)
        ).scalar()
    if job_id is None:
        return None
    claimed = _set_if(
        db,
        int(job_id),
        ("queued",),
        status="running",
        node_id=node_id,
        started_at=db.now(),
        attempts=export_jobs.c.attempts + 1,
        message="starting",
        error="",
    )
    return get(db, int(job_id)) if claimed else None


# --- the runner --------------------------------------------------------------------------------------------
def _job_process(settings: Settings, job_id: int, parent_pid: int) -> None:
    """The job's own process: tied to the web process, then `worker.run_job` (which imports torch)."""
    from aifactory.cluster import lifeline
    from aifactory.logs import configure_logging

    stop = lifeline.ProcessStop()
    lifeline.bind_engine_process(parent_pid, stop, settings.engine_stop_timeout_sec)
    configure_logging(settings)
    from aifactory.export.worker import run_job

    run_job(settings, job_id, stop)


def _exit_reason(code: int | None) -> str:
    from aifactory.cluster.runner import exit_reason

    return exit_reason(code if code is not None else -9)


class JobRunner:
    """Runs the queued jobs one by one, each in its own process. Start it in a thread that lives as long
    as the web process: on Linux a child is tied to the thread that started it (see cluster/lifeline)."""

    def __init__(self, settings: Settings, db: Database, node_id: str) -> None:
        self.settings, self.db, self.node_id = settings, db, node_id
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        requeued = recover(self.db, self.node_id)
        if requeued:
            events.record(
                self.db,
                f"{requeued} export job(s) interrupted by a restart will run again",
                source="exports",
                node_id=self.node_id,
            )
        self._thread = threading.Thread(target=self._loop, name="export-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = claim_next(self.db, self.node_id)
                if job is None:
                    self._wake.wait(5.0)
                    self._wake.clear()
                    continue
                self._run(job)
            except Exception:  # a database hiccup must not end the runner: try again shortly
                log.exception("export job runner")
                self._stopping.wait(2.0)

    def _run(self, job: dict[str, Any]) -> None:
        job_id = int(job["id"])
        events.record(
            self.db, f"export job {job_id} ({job['target']}) started", source="exports", node_id=self.node_id
        )
        process = multiprocessing.get_context("spawn").Process(
            target=_job_process, args=(self.settings, job_id, os.getpid()), name=f"aifactory-export-{job_id}"
        )
        process.start()
        update(self.db, job_id, pid=process.pid)
        asked_at: float | None = None
        while process.is_alive():
            process.join(POLL_SEC)
            if not process.is_alive():
                break
            if asked_at is None:
                row = get(self.db, job_id)
                if self._stopping.is_set() or (row is not None and row["status"] == "cancelling"):
                    process.terminate()  # SIGTERM: stop at the next step, remove half-written output
                    asked_at = time.monotonic()
            elif time.monotonic() - asked_at > self.settings.engine_stop_timeout_sec:
                process.kill()
                process.join(5)
        row = get(self.db, job_id)
        if row is not None and row["status"] in ("running", "cancelling"):  # it ended without saying so
            if row["status"] == "cancelling" or self._stopping.is_set():
                requeue_interrupted(self.db, job_id, "stopped with the server")
            else:
                fail(self.db, job_id, f"the export process {_exit_reason(process.exitcode)}")
        row = get(self.db, job_id) or {}
        level = "info" if row.get("status") in ("done", "queued", "cancelled") else "error"
        detail = f": {row.get('error')}" if row.get("error") else ""
        events.record(
            self.db,
            f"export job {job_id} ({job['target']}) {row.get('status')}{detail}",
            source="exports",
            node_id=self.node_id,
            level=level,
        )
