"""What an engine's `run(ctx)` gets: settings, the database, a stop signal, and ways to report.

An engine is a plain function that loops until `ctx.stopping()`. The node runs it in a thread, or in its
own process when it does heavy CPU work (the trainer), so the web server's event loop and the other
engines keep their cores. Its phase, counters and events are what the dashboard shows of it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aifactory.cluster import engine_state
from aifactory.db import Database, events
from aifactory.settings import Settings


class StopSignal(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class EngineContext:
    """Counter updates are batched: written at most every FLUSH_EVERY seconds."""

    FLUSH_EVERY = 2.0

    def __init__(self, settings: Settings, db: Database, node_id: str, engine: str, stop: StopSignal) -> None:
        self.settings = settings
        self.db = db
        self.node_id = node_id
        self.engine = engine
        self._stop = stop
        state = engine_state.load(db, node_id, engine) or {}
        self.counters: dict[str, float] = dict(state.get("counters") or {})
        self._dirty = False
        self._flushed_at = 0.0

    def stopping(self) -> bool:
        """True once the engine should wind down (Stop pressed, node shutting down, SIGTERM, node gone)."""
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
        engine_state.report(self.db, self.node_id, self.engine, counters=dict(self.counters), **values)
        self._dirty = False
        self._flushed_at = time.monotonic()
