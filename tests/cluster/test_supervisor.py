"""The supervisor's decisions, as a table: what should run, what runs, recent failures -> actions."""

from __future__ import annotations

import pytest

from aifactory.cluster.supervisor import (
    MAX_BACKOFF,
    RESTART_AFTER_FINISH,
    Backoff,
    Forget,
    Kill,
    Reap,
    Running,
    Start,
    Stop,
    plan,
    restart_delay,
)

NOW = 1000.0
ALIVE = Running(alive=True)
STOPPING = Running(alive=True, stop_requested_at=NOW - 5)
STUCK = Running(alive=True, stop_requested_at=NOW - 31)
CRASHED = Running(alive=False, failed=True)
FINISHED = Running(alive=False, failed=False)


@pytest.mark.parametrize(
    ("desired", "running", "failures", "expected"),
    [
        # wanted and not running: start it
        ({"a": True}, {}, {}, [Start("a")]),
        # wanted and running: nothing to do
        ({"a": True}, {"a": ALIVE}, {}, []),
        # not wanted, not running: nothing
        ({"a": False}, {}, {}, []),
        # not wanted but running: ask it to stop, once
        ({"a": False}, {"a": ALIVE}, {}, [Stop("a")]),
        ({"a": False}, {"a": STOPPING}, {}, []),
        # asked to stop more than the stop timeout ago: kill it
        ({"a": False}, {"a": STUCK}, {}, [Kill("a")]),
        # an engine the node no longer has (not in desired) is stopped too
        ({}, {"gone": ALIVE}, {}, [Stop("gone")]),
        # crashed for the first time: reaped, restart held for 1 s
        ({"a": True}, {"a": CRASHED}, {}, [Reap("a", True, Backoff(1, NOW + 1))]),
        # crashed again: the delay doubles
        ({"a": True}, {"a": CRASHED}, {"a": Backoff(3, NOW - 1)}, [Reap("a", True, Backoff(4, NOW + 8))]),
        # crashing for ever: the delay is capped
        (
            {"a": True},
            {"a": CRASHED},
            {"a": Backoff(20, NOW - 1)},
            [Reap("a", True, Backoff(21, NOW + MAX_BACKOFF))],
        ),
        # ended by itself: started again after a second, the crash count reset
        (
            {"a": True},
            {"a": FINISHED},
            {"a": Backoff(2, NOW - 1)},
            [Reap("a", False, Backoff(0, NOW + RESTART_AFTER_FINISH))],
        ),
        # waiting out its backoff: not started yet
        ({"a": True}, {}, {"a": Backoff(2, NOW + 0.5)}, []),
        # backoff over: started
        ({"a": True}, {}, {"a": Backoff(2, NOW - 0.1)}, [Start("a")]),
        # stopped by the user while in backoff: its history is forgotten, so Ignite starts it at once
        ({"a": False}, {}, {"a": Backoff(5, NOW + 30)}, [Forget("a")]),
        # a stopped engine that ended while stopping: reaped, no restart since it is not wanted
        ({"a": False}, {"a": FINISHED}, {}, [Reap("a", False, Backoff(0, NOW + RESTART_AFTER_FINISH))]),
        # several engines: each decided on its own, in name order
        (
            {"a": True, "b": False, "c": True},
            {"b": ALIVE, "c": CRASHED},
            {},
            [Start("a"), Stop("b"), Reap("c", True, Backoff(1, NOW + 1))],
        ),
    ],
)
def test_plan(desired: dict, running: dict, failures: dict, expected: list) -> None:
    assert plan(desired, running, failures, NOW, stop_timeout=30) == expected


def test_restart_delays_double_up_to_a_minute() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]
