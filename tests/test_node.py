"""The node supervisor: Ignite/Stop, per-engine control, resume after restart, crash recovery."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from aifactory.db import Database, events
from aifactory.db import engines as engine_db
from aifactory.db import nodes as node_db
from aifactory.db.nodes import NodeConflict
from aifactory.node import Node
from tests.sample_engines import CRASHER, PROCESS_TICKER, SECOND, TICKER


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def state(db: Database, node_id: str, engine: str) -> dict:
    row = engine_db.load(db, node_id, engine)
    assert row is not None
    return row


@pytest.fixture
def start_node(db: Database, make_settings) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(specs=(TICKER, SECOND), node_id: str = "n1", role: str = "master") -> Node:
        node = Node(make_settings(database_url=db.url), db, list(specs), role=role, node_id=node_id)
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        if node._thread is not None and node._thread.is_alive():
            node.stop(timeout=10)


def test_ignite_starts_every_engine_and_stop_stops_them(db: Database, start_node) -> None:
    node = start_node()
    assert engine_db.desired_states(db, "n1") == {"ticker": "stopped", "second": "stopped"}

    node_db.send_command(db, "start")
    for name in ("ticker", "second"):
        wait_for(
            lambda n=name: (state(db, "n1", n)["counters"] or {}).get("ticks", 0) > 0, what=f"{name} ticks"
        )
    assert node_db.list_nodes(db, offline_after=5)[0]["applied_seq"] == 1

    node_db.send_command(db, "stop")
    wait_for(lambda: not node.runners, what="engines to stop")
    for name in ("ticker", "second"):
        assert state(db, "n1", name)["phase"] == "stopped"
        assert state(db, "n1", name)["desired"] == "stopped"


def test_engines_start_and_stop_one_by_one(db: Database, start_node) -> None:
    node = start_node()
    engine_db.set_desired(db, "n1", "running", engine="second")
    node.wake()
    wait_for(lambda: state(db, "n1", "second")["phase"] == "running", what="second running")
    time.sleep(0.3)
    assert state(db, "n1", "ticker")["phase"] == "stopped"
    assert set(node.runners) == {"second"}


def test_a_command_is_applied_once_not_replayed(db: Database, start_node) -> None:
    """Ignite, then stop one engine by hand: the old `start` must not bring it back."""
    node = start_node()
    node_db.send_command(db, "start", node_id="n1")
    wait_for(lambda: set(node.runners) == {"ticker", "second"}, what="both engines")
    engine_db.set_desired(db, "n1", "stopped", engine="ticker")
    wait_for(lambda: set(node.runners) == {"second"}, what="ticker to stop")
    time.sleep(1.0)  # two supervisor ticks at least
    assert set(node.runners) == {"second"}
    assert node_db.pending_command(db, "n1") is None


def test_restarted_node_resumes_what_was_running(db: Database, start_node) -> None:
    node = start_node()
    node_db.send_command(db, "start")
    wait_for(lambda: state(db, "n1", "ticker")["phase"] == "running", what="ticker running")
    node.stop(timeout=10)
    assert node_db.list_nodes(db, offline_after=5)[0]["status"] == "stopped"
    assert state(db, "n1", "ticker")["desired"] == "running"  # the wish survives the restart

    again = start_node()
    wait_for(lambda: set(again.runners) == {"ticker", "second"}, what="engines to resume")
    ticks_before = state(db, "n1", "ticker")["counters"]["ticks"]
    wait_for(lambda: state(db, "n1", "ticker")["counters"]["ticks"] > ticks_before, what="ticks to grow")
    messages = [e["message"] for e in events.recent(db, 20)]
    assert any("resuming second, ticker" in m for m in messages)


def test_crashing_engine_is_reported_and_retried_with_backoff(db: Database, start_node) -> None:
    node = start_node(specs=(TICKER, CRASHER))
    node_db.send_command(db, "start")
    wait_for(lambda: state(db, "n1", "crasher")["restarts"] >= 2, timeout=20, what="two restarts")
    crashed = state(db, "n1", "crasher")
    assert crashed["phase"] in ("error", "running")
    assert "RuntimeError: boom: a bug in an engine" in crashed["last_error"]
    assert node._not_before["crasher"] > time.monotonic() - 0.5  # a delay is in force, not a hot loop
    assert any(e["level"] == "error" and "crasher" in e["message"] for e in events.recent(db, 50))
    assert (state(db, "n1", "ticker")["counters"] or {}).get("ticks", 0) > 0  # the others keep running


def test_process_engine_runs_in_its_own_process_and_stops(db: Database, start_node) -> None:
    node = start_node(specs=(PROCESS_TICKER,))
    node_db.send_command(db, "start")
    wait_for(
        lambda: (state(db, "n1", "proc")["counters"] or {}).get("ticks", 0) > 0,
        timeout=30,
        what="process ticks",
    )
    detail = state(db, "n1", "proc")["detail"]
    assert detail.startswith("pid ") and int(detail.split()[1]) != os.getpid()
    started = time.monotonic()
    node_db.send_command(db, "stop")
    wait_for(lambda: not node.runners, what="process engine to stop")
    assert time.monotonic() - started < 10
    assert state(db, "n1", "proc")["phase"] == "stopped"


def test_second_process_with_the_same_node_id_is_refused(db: Database, start_node, make_settings) -> None:
    start_node()
    twin = Node(make_settings(database_url=db.url), db, [TICKER], role="master", node_id="n1")
    with pytest.raises(NodeConflict, match="already running"):
        twin.start()


def test_worker_runs_only_engines_of_its_role(db: Database, start_node) -> None:
    node = start_node(node_id="w1", role="worker")
    assert set(node.specs) == {"ticker"}
    assert engine_db.desired_states(db, "w1") == {"ticker": "stopped"}
