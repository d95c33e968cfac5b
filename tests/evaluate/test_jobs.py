"""Evaluation jobs: one at a time, in a process of their own; a killed one is failed and stores nothing."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from aifactory.db.database import Database
from aifactory.evaluate import jobs, store
from tests.conftest import wait_for
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save


def test_a_killed_evaluation_job_is_failed_and_leaves_no_run(make_settings: Any, db: Database) -> None:
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    train_and_save(settings, db, 0)
    job_id = jobs.start(settings, db, "best")
    with pytest.raises(jobs.JobRunning):
        jobs.start(settings, db, "best")
    pid = jobs.current(db)["pid"]  # type: ignore[index]
    os.kill(pid, signal.SIGKILL)
    job = wait_for(
        lambda: (j := jobs.current(db)) is not None and j["status"] == "failed" and j,
        timeout=60,
        what="the killed job to be marked failed",
    )
    assert job["id"] == job_id and "ended without a result" in job["error"]  # type: ignore[index]
    assert store.list_runs(db) == [] and store.growth(db) == []
    # The next one runs to the end.
    second = jobs.start(settings, db, "best")
    done = wait_for(
        lambda: (j := jobs.current(db)) is not None and j["status"] != "running" and j,
        timeout=120,
        what="the evaluation job to end",
    )
    assert done["id"] == second and done["status"] == "done", done  # type: ignore[index]
    assert [run["id"] for run in store.list_runs(db)] == [done["run_id"]]  # type: ignore[index]
