"""The command channel and engine rows: commands applied once, the cluster target late joiners follow."""

from __future__ import annotations

import pytest

from aifactory.cluster import commands, engine_state
from aifactory.db import Database
from tests.cluster.test_membership import register


def test_commands_are_sequenced_and_acknowledged(db: Database) -> None:
    register(db, "w1")
    register(db, "m1", role="master")
    assert commands.pending_command(db, "w1") is None
    assert commands.send_command(db, "start", role="worker") == 1
    assert commands.send_command(db, "stop") == 2
    command = commands.pending_command(db, "w1")
    assert command == commands.Command("stop", 2)  # the latest wish wins
    commands.ack_command(db, "w1", command.seq)
    assert commands.pending_command(db, "w1") is None
    assert commands.send_command(db, "start", node_id="missing") == 0
    with pytest.raises(ValueError):
        commands.send_command(db, "reboot")


def test_engine_rows_follow_the_engines_a_node_has(db: Database) -> None:
    register(db, "m1", role="master")
    engine_state.ensure(db, "m1", ["collector", "trainer"])
    engine_state.set_desired(db, "m1", "running", engine="trainer")
    engine_state.ensure(db, "m1", ["trainer", "evaluator"])
    assert engine_state.desired_states(db, "m1") == {"evaluator": "stopped", "trainer": "running"}


def test_a_command_to_every_node_becomes_the_target_new_engines_start_from(db: Database) -> None:
    assert commands.cluster_target(db, "worker") is None
    assert commands.desired_for_new_engines(db, "worker") == "stopped"
    commands.send_command(db, "start")  # Ignite: every role
    assert (
        commands.cluster_target(db, "worker") == "start" and commands.cluster_target(db, "master") == "start"
    )
    commands.send_command(db, "stop", role="worker")
    assert commands.desired_for_new_engines(db, "worker") == "stopped"
    assert commands.desired_for_new_engines(db, "master") == "running"
    register(db, "w1")
    commands.send_command(db, "start", node_id="w1")  # one node: not the cluster's target
    assert commands.cluster_target(db, "worker") == "stop"


def test_new_engine_rows_start_from_the_given_wish_existing_ones_keep_theirs(db: Database) -> None:
    register(db, "m1", role="master")
    assert engine_state.ensure(db, "m1", ["collector"], desired="stopped") == ["collector"]
    created = engine_state.ensure(db, "m1", ["collector", "inference"], desired="running")
    assert created == ["inference"]
    assert engine_state.desired_states(db, "m1") == {"collector": "stopped", "inference": "running"}
