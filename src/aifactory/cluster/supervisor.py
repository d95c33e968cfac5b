"""The supervisor: which engines to start, stop, kill or restart, decided by a pure function.

`plan(desired, running, failures, now)` looks at what should run, what runs, and the engines' recent
failures, and returns actions; it touches nothing, so every case is a line of a table test. The
`Supervisor` is the thin loop around it: it reads the wishes from the database, applies the actions to
its runners and reports each change. A crashed engine is restarted after 1, 2, 4 ... 60 seconds; one
that ended by itself after a second; one asked to stop gets ENGINE_STOP_TIMEOUT_SEC, then it is killed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aifactory.cluster import engine_state
from aifactory.cluster.registry import EngineSpec
from aifactory.cluster.runner import EngineRunner
from aifactory.db import Database, events
from aifactory.settings import Settings

log = logging.getLogger("aifactory")

MAX_BACKOFF = 60.0  # longest wait before restarting an engine that keeps crashing
RESTART_AFTER_FINISH = 1.0  # an engine that returned on its own is started again (its next cycle)


@dataclass(frozen=True)
class Running:
    """What the plan needs to know of a runner."""

    alive: bool
    stop_requested_at: float | None = None
    failed: bool = False  # meaningful once it is no longer alive


@dataclass(frozen=True)
class Backoff:
    failures: int  # crashes in a row
    not_before: float  # no restart before this time


@dataclass(frozen=True)
class Start:
    engine: str


@dataclass(frozen=True)
class Stop:
    engine: str  # ask it to stop (the first time)


@dataclass(frozen=True)
class Kill:
    engine: str  # it was asked to stop more than the stop timeout ago


@dataclass(frozen=True)
class Reap:
    engine: str  # it ended: forget the runner, report how, and hold restarts until `backoff`
    failed: bool
    backoff: Backoff


@dataclass(frozen=True)
class Forget:
    engine: str  # no longer wanted: its crash history no longer delays a start


Action = Start | Stop | Kill | Reap | Forget


def restart_delay(failures: int) -> float:
    return min(MAX_BACKOFF, 2.0 ** (failures - 1))


def plan(
    desired: Mapping[str, bool],
    running: Mapping[str, Running],
    failures: Mapping[str, Backoff],
    now: float,
    *,
    stop_timeout: float = 30.0,
) -> list[Action]:
    """The actions that bring `running` towards `desired` (engine name -> should it run)."""
    actions: list[Action] = []
    for name in sorted(set(desired) | set(running)):
        want = desired.get(name, False)
        runner = running.get(name)
        history = failures.get(name)
        if runner is not None and not runner.alive:
            if runner.failed:
                count = (history.failures if history else 0) + 1
                backoff = Backoff(count, now + restart_delay(count))
            else:
                backoff = Backoff(0, now + RESTART_AFTER_FINISH)
            actions.append(Reap(name, runner.failed, backoff))
            continue  # started again on a later tick, once its delay has passed
        if want and runner is None:
            if history is None or now >= history.not_before:
                actions.append(Start(name))
        elif not want and runner is not None:
            if runner.stop_requested_at is None:
                actions.append(Stop(name))
            elif now - runner.stop_requested_at > stop_timeout:
                actions.append(Kill(name))
        elif not want and history is not None:
            actions.append(Forget(name))
    return actions


class Supervisor:
    """Runs one node's engines so that they converge on what the database says they should do."""

    def __init__(
        self, settings: Settings, db: Database, node_id: str, specs: Mapping[str, EngineSpec]
    ) -> None:
        self.settings = settings
        self.db = db
        self.node_id = node_id
        self.specs = dict(specs)
        self.runners: dict[str, EngineRunner] = {}
        self.failures: dict[str, Backoff] = {}
        self.desired: dict[str, str] = {}  # the last wishes read, to recreate rows removed under us

    def running_view(self) -> dict[str, Running]:
        return {
            name: Running(
                runner.alive(), runner.stop_requested_at, not runner.alive() and runner.outcome().failed
            )
            for name, runner in self.runners.items()
        }

    def tick(self, now: float | None = None) -> list[Action]:
        self.desired = engine_state.desired_states(self.db, self.node_id)
        wants = {name: self.desired.get(name) == "running" for name in self.specs}
        now = time.monotonic() if now is None else now
        actions = plan(
            wants, self.running_view(), self.failures, now, stop_timeout=self.settings.engine_stop_timeout_sec
        )
        for action in actions:
            self.apply(action, wants.get(action.engine, False))
        return actions

    def apply(self, action: Action, wanted: bool) -> None:
        name = action.engine
        if isinstance(action, Start):
            # Reported before the engine runs, so its own reports (even a crash at once) come after.
            # last_error stays: the last failure is worth seeing while the engine runs again.
            engine_state.report(self.db, self.node_id, name, started_at=self.db.now())
            self.runners[name] = EngineRunner(self.specs[name], self.settings, self.db, self.node_id)
        elif isinstance(action, Stop):
            engine_state.report(self.db, self.node_id, name, phase="stopping")
            self.runners[name].request_stop()
        elif isinstance(action, Kill):
            self.runners[name].kill()
        elif isinstance(action, Reap):
            self._reap(action, wanted)
        elif isinstance(action, Forget):
            self.failures.pop(name, None)

    def _reap(self, action: Reap, wanted: bool) -> None:
        name = action.engine
        runner = self.runners[name]
        runner.join(1.0)
        outcome = runner.outcome()
        self.failures[name] = action.backoff
        if not action.failed:
            engine_state.report(self.db, self.node_id, name, phase="stopped")
        else:
            values: dict = {"phase": "error", "restarts": action.backoff.failures}
            if outcome.reason:  # a process that died without a word: its exit status is the reason
                values["last_error"] = outcome.reason
                self.event(f"engine {name} {outcome.reason}", level="error")
            engine_state.report(self.db, self.node_id, name, **values)
            if wanted:
                delay = action.backoff.not_before - time.monotonic()
                self.event(
                    f"engine {name} failed; restarting in {max(0.0, delay):.0f}s "
                    f"(attempt {action.backoff.failures})",
                    level="warning",
                )
        del self.runners[name]  # last: whoever sees it gone finds its final state reported

    def shutdown(self, timeout: float) -> None:
        """Ask every engine to stop, wait for them up to `timeout`, then kill the processes that remain.
        What the user wanted them to do stays in the database for the next start."""
        for runner in self.runners.values():
            runner.request_stop()
        deadline = time.monotonic() + timeout
        for runner in self.runners.values():
            runner.join(max(0.1, deadline - time.monotonic()))
        for name, runner in self.runners.items():
            if runner.alive():
                runner.kill()
            if runner.alive():
                log.warning(
                    "engine %s (a thread) did not stop in %.0fs; it ends with the node", name, timeout
                )
                continue
            outcome = runner.outcome()
            if outcome.reason:
                engine_state.report(self.db, self.node_id, name, phase="error", last_error=outcome.reason)
            elif not outcome.failed:  # (an engine that failed has reported its error itself)
                engine_state.report(self.db, self.node_id, name, phase="stopped")
        self.runners.clear()

    def event(self, message: str, level: str = "info") -> None:
        events.record(self.db, message, source="node", node_id=self.node_id, level=level)
