"""The evaluator engine evaluates each new best checkpoint and, with AUTO_PROMOTE=1, runs the gate."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from aifactory.cluster import engine_state, membership
from aifactory.cluster.context import EngineContext
from aifactory.db.database import Database
from aifactory.evaluate import store
from aifactory.evaluate.engine import evaluate_new_best
from aifactory.registry import versions
from tests.conftest import wait_for
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save


def test_each_new_best_checkpoint_is_evaluated_and_auto_promoted_through_the_gate(
    make_settings: Any, db: Database
) -> None:
    settings = factory_settings(
        make_settings, db, auto_promote=True, promotion_min_score=0.15, eval_poll_sec=0.05
    )
    build_factory(settings, db)
    train_and_save(settings, db, 600)
    membership.register(
        db, node_id="n", role="master", hostname=socket.gethostname(), pid=os.getpid(),
        instance_id="test", version="test", api_url="", alive_window=5,
    )  # fmt: skip
    engine_state.ensure(db, "n", ["evaluator"])
    stop = threading.Event()
    thread = threading.Thread(
        target=evaluate_new_best, args=(EngineContext(settings, db, "n", "evaluator", stop),), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: versions.state(db)["production"] == 1, timeout=120, what="v1 promoted")
        train_and_save(settings, db, 20, seed=3)  # a new, worse best checkpoint
        wait_for(lambda: len(store.list_runs(db)) == 2, timeout=120, what="the new best evaluated")
        wait_for(lambda: versions.history(db)[0]["action"] == "refused", timeout=60, what="the gate")
    finally:
        stop.set()
        thread.join(60)
    assert [run["step"] for run in store.list_runs(db)] == [20, 600]
    assert versions.state(db)["production"] == 1  # the worse one was refused
    assert "< PROMOTION_MIN_SCORE" in versions.history(db)[0]["rule"]
    assert all(len(entry["samples"]) == 2 for entry in store.growth(db))
