"""A node in this process: Ignite/Stop, per-engine control, resume after restart, crash recovery."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from aifactory.cluster import commands, engine_state, membership
from aifactory.cluster.membership import NodeConflict
from aifactory.cluster.node import Node
from aifactory.db import Database, counters, events
from aifactory.db.schema import nodes
from tests.conftest import wait_for
from tests.sample_engines import CRASHER, DIER, PROCESS_TICKER, SAVER, SECOND, TICKER


def state(db: Database, node_id: str, engine: str) -> dict:
    row = engine_state.load(db, node_id, engine)
    assert row is not None
    return row


def ticks(db: Database, node_id: str, engine: str) -> float:
    return (state(db, node_id, engine)["counters"] or {}).get("ticks", 0)


@pytest.fixture
def start_node(db: Database, make_settings) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(specs=(TICKER, SECOND), node_id: str = "n1", role: str = "master", **settings) -> Node:
        node = Node(
            make_settings(database_url=db.url, **settings), db, list(specs), role=role, node_id=node_id
        )
        node.start()
        started.append(node)
        return node

    yield start
    for node in started:
        if node._thread is not None and node._thread.is_alive():
            node.stop(timeout=10)


def test_ignite_starts_every_engine_and_stop_stops_them(db: Database, start_node) -> None:
    node = start_node()
    assert engine_state.desired_states(db, "n1") == {"ticker": "stopped", "second": "stopped"}

    commands.send_command(db, "start")
    for name in ("ticker", "second"):
        wait_for(lambda n=name: ticks(db, "n1", n) > 0, what=f"{name} ticks")
    assert membership.list_nodes(db, offline_after=5)[0]["applied_seq"] == 1

    commands.send_command(db, "stop")
    wait_for(lambda: not node.runners, what="engines to stop")
    for name in ("ticker", "second"):
        assert state(db, "n1", name)["phase"] == "stopped"
        assert state(db, "n1", name)["desired"] == "stopped"


def test_engines_start_and_stop_one_by_one(db: Database, start_node) -> None:
    node = start_node()
    engine_state.set_desired(db, "n1", "running", engine="second")
    node.wake()
    wait_for(lambda: state(db, "n1", "second")["phase"] == "running", what="second running")
    time.sleep(0.3)
    assert state(db, "n1", "ticker")["phase"] == "stopped"
    assert set(node.runners) == {"second"}


def test_a_command_is_applied_once_not_replayed(db: Database, start_node) -> None:
    """Ignite, then stop one engine by hand: the old `start` must not bring it back."""
    node = start_node()
    commands.send_command(db, "start", node_id="n1")
    wait_for(lambda: set(node.runners) == {"ticker", "second"}, what="both engines")
    engine_state.set_desired(db, "n1", "stopped", engine="ticker")
    wait_for(lambda: set(node.runners) == {"second"}, what="ticker to stop")
    time.sleep(1.0)  # two supervisor ticks at least
    assert set(node.runners) == {"second"}
    assert commands.pending_command(db, "n1") is None


def test_restarted_node_resumes_what_was_running(db: Database, start_node) -> None:
    node = start_node()
    commands.send_command(db, "start")
    wait_for(lambda: state(db, "n1", "ticker")["phase"] == "running", what="ticker running")
    node.stop(timeout=10)
    assert membership.list_nodes(db, offline_after=5)[0]["status"] == "stopped"
    assert state(db, "n1", "ticker")["desired"] == "running"  # the wish survives the restart

    again = start_node()
    wait_for(lambda: set(again.runners) == {"ticker", "second"}, what="engines to resume")
    ticks_before = ticks(db, "n1", "ticker")
    wait_for(lambda: ticks(db, "n1", "ticker") > ticks_before, what="ticks to grow")
    messages = [e["message"] for e in events.recent(db, 20)]
    assert any("resuming second, ticker" in m for m in messages)


def test_crashing_engine_is_reported_in_one_line_and_retried_with_backoff(db: Database, start_node) -> None:
    node = start_node(specs=(TICKER, CRASHER))
    ignited = time.monotonic()
    commands.send_command(db, "start")
    wait_for(lambda: state(db, "n1", "crasher")["restarts"] >= 2, timeout=20, what="two restarts")
    assert time.monotonic() - ignited >= 1.0  # the second crash came after a 1 s delay: not a hot loop
    crashed = state(db, "n1", "crasher")
    assert crashed["phase"] in ("error", "running")
    assert crashed["last_error"] == "RuntimeError: boom: a bug in an engine"  # no traceback
    assert node.supervisor.failures["crasher"].failures >= 2
    assert any(e["level"] == "error" and "crasher" in e["message"] for e in events.recent(db, 50))
    # the others keep running (the ticker's counters reach the database every couple of seconds)
    wait_for(lambda: ticks(db, "n1", "ticker") > 0, timeout=20, what="the ticker's ticks")


def test_process_engine_runs_in_its_own_process_and_stops(db: Database, start_node) -> None:
    node = start_node(specs=(PROCESS_TICKER,))
    commands.send_command(db, "start")
    wait_for(lambda: ticks(db, "n1", "proc") > 0, timeout=30, what="process ticks")
    detail = state(db, "n1", "proc")["detail"]
    assert detail.startswith("pid ") and int(detail.split()[1]) != os.getpid()
    started = time.monotonic()
    commands.send_command(db, "stop")
    wait_for(lambda: not node.runners, what="process engine to stop")
    assert time.monotonic() - started < 10
    assert state(db, "n1", "proc")["phase"] == "stopped"


def test_a_process_engine_killed_by_a_signal_shows_the_signal_as_its_reason(db: Database, start_node) -> None:
    start_node(specs=(DIER,))
    engine_state.set_desired(db, "n1", "running", engine="dier")
    wait_for(lambda: state(db, "n1", "dier")["restarts"] >= 1, timeout=30, what="the engine to die")
    row = state(db, "n1", "dier")
    assert row["last_error"] == "killed by signal SIGKILL (out of memory?)"
    assert any("dier killed by signal SIGKILL" in e["message"] for e in events.recent(db, 50))


def test_an_engine_that_does_not_stop_in_time_is_killed(db: Database, start_node) -> None:
    """ENGINE_STOP_TIMEOUT_SEC bounds a stop; a process engine that ignores it is killed."""
    node = start_node(specs=(PROCESS_TICKER,), engine_stop_timeout_sec=1)
    engine_state.set_desired(db, "n1", "running", engine="proc")
    wait_for(lambda: ticks(db, "n1", "proc") > 0, timeout=30, what="process ticks")
    os.kill(node.runners["proc"].pid, signal.SIGSTOP)  #: it can no longer see the stop request
    engine_state.set_desired(db, "n1", "stopped", engine="proc")
    wait_for(lambda: not node.runners, timeout=30, what="the engine to be killed")
    assert "killed" in state(db, "n1", "proc")["last_error"]


def test_sigterm_to_an_engine_process_means_stop_and_save(db: Database, start_node) -> None:
    """What systemd or `docker stop` send to every process: the engine saves, and is not an error."""
    node = start_node(specs=(SAVER,))
    engine_state.set_desired(db, "n1", "running", engine="saver")
    wait_for(lambda: ticks(db, "n1", "saver") > 0, timeout=30, what="the engine to tick")
    pid = node.runners["saver"].pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: (node.settings.data_dir / f"saved-{pid}").exists(), timeout=30, what="the save")
    # a clean end: no error; the engine is still wanted, so the node starts it again
    wait_for(lambda: "saver" in node.runners and node.runners["saver"].pid != pid, timeout=30, what="restart")
    assert state(db, "n1", "saver")["last_error"] == ""


def test_second_process_with_the_same_node_id_is_refused(db: Database, start_node, make_settings) -> None:
    start_node(role="worker")
    twin = Node(make_settings(database_url=db.url), db, [TICKER], role="worker", node_id="n1")
    with pytest.raises(NodeConflict, match="already running"):
        twin.start()


def test_worker_runs_only_engines_of_its_role(db: Database, start_node) -> None:
    node = start_node(node_id="w1", role="worker")
    assert set(node.specs) == {"ticker"}
    assert engine_state.desired_states(db, "w1") == {"ticker": "stopped"}


def test_a_node_joining_an_ignited_cluster_starts_working(db: Database, start_node) -> None:
    start_node(node_id="w1", role="worker")
    commands.send_command(db, "start")  # Ignite, before w2 exists
    late = start_node(node_id="w2", role="worker")
    assert engine_state.desired_states(db, "w2") == {"ticker": "running"}
    wait_for(lambda: "ticker" in late.runners and ticks(db, "w2", "ticker") > 0, what="w2 to work")
    commands.send_command(db, "stop")
    assert start_node(node_id="w3", role="worker") and engine_state.desired_states(db, "w3") == {
        "ticker": "stopped"
    }


def test_a_node_removed_as_stale_registers_again_and_keeps_working(db: Database, start_node) -> None:
    node = start_node(node_id="w1", role="worker")
    commands.send_command(db, "start")
    wait_for(lambda: ticks(db, "w1", "ticker") > 0, what="ticks")
    membership.delete_stale(db, older_than=-1)  # what "clean up stale" does to a node it thinks is gone
    wait_for(lambda: membership.exists(db, "w1"), what="w1 to register again")
    assert not node.lost and node._thread is not None and node._thread.is_alive()
    wait_for(lambda: engine_state.load(db, "w1", "ticker") is not None, what="its engine row")
    assert state(db, "w1", "ticker")["desired"] == "running"
    assert "ticker" in node.runners


def test_a_node_whose_id_is_taken_over_stops_itself(db: Database, start_node) -> None:
    node = start_node(node_id="w1", role="worker")
    with db.begin() as conn:  # another process claimed the row (as after a long freeze of this one)
        conn.execute(nodes.update().values(instance_id="someone-else"))
    assert node.wait_stopped(10)
    assert "taken over" in node.lost
    wait_for(lambda: node._thread is not None and not node._thread.is_alive(), what="the loop to end")


def test_counters_added_by_a_node_are_its_own_rows(db: Database, start_node) -> None:
    start_node(node_id="w1", role="worker")
    counters.add(db, {"pages": 2})
    counters.add(db, {"pages": 3}, node_id="w2")
    assert counters.get_all(db) == {"pages": 5}
    assert counters.get_all(db, node_id="w1") == {"pages": 2}
