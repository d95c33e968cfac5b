"""Engines: the long-running workers a node supervises (collector, dataset builder, trainer, evaluator).

An engine is a plain function `run(ctx)` that loops until `ctx.stopping()`; the node starts it in a
thread, or in its own process when it does heavy CPU work (the trainer), so the web server's event
loop and the other engines keep their cores. The context carries what an engine needs: settings, the
database, a stop signal and ways to report its phase, counters and events for the dashboard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aifactory.db import Database, events
from aifactory.db import engines as engine_db
from aifactory.settings import Settings

log = logging.getLogger("aifactory")


@dataclass(frozen=True)
class EngineSpec:
    """An engine a node can run. `run` must be a module-level function (process engines pickle it)."""

    name: str
    run: Callable[[EngineContext], None]
    description: str = ""
    roles: tuple[str, ...] = ("master",)
    own_process: bool = False
    # False: started when the node starts and left alone by Ignite/Stop, so it runs whether or not the
    # factory is collecting and training (the inference engine); only its own control stops it.
    follows_ignite: bool = True


class StopSignal(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class EngineContext:
    """What an engine's `run` gets. Counter updates are batched: written at most every 2 seconds."""

    FLUSH_EVERY = 2.0

    def __init__(
        self,
        settings: Settings,
        db: Database,
        node_id: str,
        engine: str,
        stop: StopSignal,
        parent_pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.node_id = node_id
        self.engine = engine
        self._stop = stop
        self._parent_pid = parent_pid
        state = engine_db.load(db, node_id, engine) or {}
        self.counters: dict[str, float] = dict(state.get("counters") or {})
        self._dirty = False
        self._flushed_at = 0.0

    def stopping(self) -> bool:
        """True once the engine should wind down (Stop pressed, node shutting down, or parent gone)."""
        if self._parent_pid is not None and os.getppid() != self._parent_pid:
            self._stop.set()  # the node process died: do not run on as an orphan
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on stop; returns True if the engine should stop."""
        self.flush_if_due()
        deadline = time.monotonic() + seconds
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, 0.5))
        return True

    def set_phase(self, phase: str, detail: str = "") -> None:
        self._dirty = True
        self.flush(phase=phase[:64], detail=detail[:2000])

    def count(self, **deltas: float) -> None:
        for name, delta in deltas.items():
            self.counters[name] = self.counters.get(name, 0) + delta
        self._dirty = True
        self.flush_if_due()

    def log(self, message: str, level: str = "info") -> None:
        events.record(self.db, message, source=self.engine, node_id=self.node_id, level=level)

    def flush_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._flushed_at >= self.FLUSH_EVERY:
            self.flush()

    def flush(self, **values: Any) -> None:
        if not self._dirty and not values:
            return
        engine_db.report(self.db, self.node_id, self.engine, counters=dict(self.counters), **values)
        self._dirty = False
        self._flushed_at = time.monotonic()


def run_engine(ctx: EngineContext, spec: EngineSpec) -> bool:
    """Run one engine to completion, reporting its phases; returns False if it crashed."""
    ctx.set_phase("running")
    try:
        spec.run(ctx)
    except Exception as exc:  # an engine bug must not take the node down: report it, the node retries
        ctx.flush()
        trace = traceback.format_exc(limit=20)
        engine_db.report(ctx.db, ctx.node_id, spec.name, phase="error", last_error=trace[-4000:])
        ctx.log(f"engine {spec.name} crashed: {type(exc).__name__}: {exc}", level="error")
        return False
    ctx.set_phase("stopped" if ctx.stopping() else "finished")
    return True


def _process_main(spec: EngineSpec, settings: Settings, node_id: str, stop: StopSignal, parent: int) -> None:
    # Ctrl-C reaches the whole process group; the node asks this process to stop through `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    db = Database(settings.resolved_database_url(), pool_size=2)
    try:
        ok = run_engine(EngineContext(settings, db, node_id, spec.name, stop, parent_pid=parent), spec)
    finally:
        db.dispose()
    raise SystemExit(0 if ok else 1)


class EngineRunner:
    """One run of one engine, in a thread or a child process."""

    def __init__(self, spec: EngineSpec, settings: Settings, db: Database, node_id: str) -> None:
        self.spec = spec
        self.started_at = time.monotonic()
        self.stop_requested_at: float | None = None
        self.crashed = False
        if spec.own_process:
            mp = multiprocessing.get_context("spawn")  # no fork: the parent holds threads and sockets
            self._stop: StopSignal = mp.Event()
            self._process = mp.Process(
                target=_process_main,
                args=(spec, settings, node_id, self._stop, os.getpid()),
                name=f"aifactory-{spec.name}",
                daemon=False,
            )
            self._process.start()
            self._thread = None
        else:
            self._stop = threading.Event()
            ctx = EngineContext(settings, db, node_id, spec.name, self._stop)
            self._thread = threading.Thread(
                target=self._thread_main, args=(ctx,), name=f"engine-{spec.name}", daemon=True
            )
            self._thread.start()

    def _thread_main(self, ctx: EngineContext) -> None:
        self.crashed = not run_engine(ctx, self.spec)

    def alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._process.is_alive()

    def finished_with_error(self) -> bool:
        if self._thread is not None:
            return self.crashed
        return self._process.exitcode not in (0, None)

    def request_stop(self) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait for the engine to end; a child process that ignores the request is terminated."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("engine %s did not stop in %.0fs; terminating it", self.spec.name, timeout)
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        return not self._process.is_alive()
