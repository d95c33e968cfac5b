"""One run of one engine, in a thread of the node or in its own process, and why it ended.

Any engine can run in its own process (`own_process=True`: the trainer, inference): the runner knows
nothing about what it runs. Such a process is tied to the node (see `lifeline`): SIGTERM or the node's
death means stop and save. When it ends, its exit code or signal is the reason shown on the dashboard
("killed by signal SIGKILL (out of memory?)"), unless the engine reported its own error first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from aifactory.cluster import engine_state, lifeline
from aifactory.cluster.context import EngineContext, StopSignal
from aifactory.cluster.registry import EngineSpec
from aifactory.db import Database
from aifactory.logs import configure_logging
from aifactory.settings import Settings, mask_secrets

log = logging.getLogger("aifactory")

ENGINE_FAILED = 70  # exit code of an engine process whose run() raised: it has reported why itself


@dataclass(frozen=True)
class Outcome:
    failed: bool
    reason: str = ""  # one line for the dashboard; "" when the engine ended normally or said why itself


def short_reason(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}"[:500] if text else type(exc).__name__


def run_engine(ctx: EngineContext, spec: EngineSpec) -> bool:
    """Run one engine to completion, reporting its phases; returns False if it crashed."""
    ctx.set_phase("running")
    try:
        spec.load()(ctx)
    except Exception as exc:  # an engine bug must not take the node down: report it, the node retries
        ctx.flush()
        reason = mask_secrets(short_reason(exc), ctx.settings.secrets())
        log.error("engine %s crashed", spec.name, exc_info=True)  # the traceback goes to the log only
        engine_state.report(ctx.db, ctx.node_id, spec.name, phase="error", last_error=reason)
        ctx.log(f"engine {spec.name} crashed: {reason}", level="error")
        return False
    ctx.set_phase("stopped" if ctx.stopping() else "finished")
    return True


def _process_main(spec: EngineSpec, settings: Settings, node_id: str, parent: int) -> None:
    stop = lifeline.ProcessStop()
    lifeline.bind_engine_process(parent, stop, settings.engine_stop_timeout_sec)
    configure_logging(settings)
    with lifeline.leave_at_once_on_sigterm(stop):
        spec.load()  # imported now (the trainer's torch), so that a stop meanwhile ends the process at once
    # One engine thread uses the database here: a small pool, and no overflow to exhaust the server.
    db = Database(settings.resolved_database_url(), pool_size=2, max_overflow=0)
    db.node_id = node_id
    try:
        ok = run_engine(EngineContext(settings, db, node_id, spec.name, stop), spec)
    finally:
        db.dispose()
    sys.exit(0 if ok else ENGINE_FAILED)


def exit_reason(code: int) -> str:
    """What a process's exit code says, for a person."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"killed by signal {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exited with code {code}"


class EngineRunner:
    """One run of one engine. Create it in the thread that supervises it: on Linux a child process is
    tied to the thread that started it."""

    def __init__(self, spec: EngineSpec, settings: Settings, db: Database, node_id: str) -> None:
        self.spec = spec
        self.started_at = time.monotonic()
        self.stop_requested_at: float | None = None
        self.killed_after: float | None = None
        self._crashed = False
        self._thread: threading.Thread | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop: StopSignal = threading.Event()  # a thread engine's; a process is sent SIGTERM
        if spec.own_process:
            mp = multiprocessing.get_context("spawn")  # no fork: the parent holds threads and sockets
            self._process = mp.Process(
                target=_process_main,
                args=(spec, settings, node_id, os.getpid()),
                name=f"aifactory-{spec.name}",
            )
            self._process.start()
        else:
            self._thread = threading.Thread(
                target=self._thread_main,
                args=(settings, db, node_id),
                name=f"engine-{spec.name}",
                daemon=True,
            )
            self._thread.start()

    def _thread_main(self, settings: Settings, db: Database, node_id: str) -> None:
        try:
            self._crashed = not run_engine(
                EngineContext(settings, db, node_id, self.spec.name, self._stop), self.spec
            )
        except Exception:  # the database failed under the report itself; the supervisor retries
            log.exception("engine %s could not run", self.spec.name)
            self._crashed = True

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        assert self._process is not None
        return self._process.is_alive()

    def request_stop(self) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()  # SIGTERM: stop and save (see lifeline)
        else:
            self._stop.set()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            assert self._process is not None
            self._process.join(timeout)
        return not self.alive()

    def kill(self) -> bool:
        """End a process that did not stop in time (SIGKILL); a thread cannot be killed, it ends with the
        node process. Returns whether the engine is gone."""
        if self._process is None or not self._process.is_alive():
            return not self.alive()
        self.killed_after = time.monotonic() - (self.stop_requested_at or self.started_at)
        log.warning("engine %s did not stop in %.0fs; killing it", self.spec.name, self.killed_after)
        self._process.kill()
        self._process.join(5)
        return not self._process.is_alive()

    def outcome(self) -> Outcome:
        """Why the engine ended (call once it is no longer alive)."""
        if self._thread is not None:
            return Outcome(self._crashed)
        assert self._process is not None
        code = self._process.exitcode
        if code in (0, None):
            return Outcome(False)
        if code == -signal.SIGTERM and self.stop_requested_at is not None and self.killed_after is None:
            return Outcome(False)  # asked to stop before it had set up its handler: nothing to save yet
        if code == ENGINE_FAILED:
            return Outcome(True)
        if self.killed_after is not None:
            return Outcome(True, f"did not stop within {self.killed_after:.0f}s of being asked; killed")
        return Outcome(True, exit_reason(code))
