"""The inference engine's place in the node: it runs without Ignite, and Stop leaves it alone."""

from __future__ import annotations

import dataclasses

from aifactory.cluster import commands
from aifactory.cluster import engine_state as engine_db
from aifactory.cluster.node import Node
from aifactory.cluster.registry import available_engines
from aifactory.db import Database
from tests.conftest import wait_for
from tests.sample_engines import TICKER

ALWAYS = dataclasses.replace(TICKER, name="always", follows_ignite=False)


def ticks(db: Database, engine: str) -> float:
    row = engine_db.load(db, "n1", engine)
    return float(((row or {}).get("counters") or {}).get("ticks", 0))


def test_the_inference_engine_is_registered_for_the_master_in_its_own_process() -> None:
    [spec] = [spec for spec in available_engines() if spec.name == "inference"]
    assert spec.own_process and not spec.follows_ignite and spec.roles == ("master",)


def test_an_engine_that_does_not_follow_ignite_runs_from_the_start_until_stopped_itself(
    db: Database, make_settings
) -> None:
    node = Node(make_settings(database_url=db.url), db, [TICKER, ALWAYS], role="master", node_id="n1")
    node.start()
    try:
        wait_for(lambda: ticks(db, "always") > 0, what="the independent engine to run without Ignite")
        assert "ticker" not in node.runners
        commands.send_command(db, "start")
        wait_for(lambda: ticks(db, "ticker") > 0, what="Ignite to start the other engine")
        commands.send_command(db, "stop")
        wait_for(lambda: "ticker" not in node.runners, what="Stop to stop the other engine")
        before = ticks(db, "always")
        wait_for(lambda: ticks(db, "always") > before, what="the independent engine to keep running")
        assert engine_db.desired_states(db, "n1") == {"ticker": "stopped", "always": "running"}
        engine_db.set_desired(db, "n1", "stopped", engine="always")  # its own control stops it
        wait_for(lambda: "always" not in node.runners, what="the engine's own stop")
    finally:
        node.stop(timeout=10)
    restarted = Node(make_settings(database_url=db.url), db, [TICKER, ALWAYS], role="master", node_id="n1")
    restarted.start()
    try:  # a person's stop is kept across restarts, as for every engine
        assert engine_db.desired_states(db, "n1")["always"] == "stopped"
    finally:
        restarted.stop(timeout=10)


def test_a_second_inference_engine_on_the_same_folder_is_refused_naming_the_first(make_settings) -> None:
    import os

    import pytest

    from aifactory.serve.server import EngineBusy, engine_lock

    settings = make_settings()
    busy = rf"served by another inference engine \(pid {os.getpid()}\)"
    with engine_lock(settings), pytest.raises(EngineBusy, match=busy), engine_lock(settings):
        pass
    with engine_lock(settings):  # released: the next one takes it
        pass
