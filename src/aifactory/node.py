"""The node: one process of the factory, its heartbeat, and the supervisor that owns its engines.

A master (`aifactory up`) runs every engine for its role next to the web server; a worker
(`aifactory worker`) runs only collection. The node never takes orders in memory: the dashboard (of any
node) writes commands and per-engine wishes into the database, and each node's supervisor converges on
them every `TICK` seconds. That is what lets a restarted node resume what was running, and what lets
one dashboard start and stop a whole cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import psutil

from aifactory import __version__
from aifactory.autotune import resolve_profile
from aifactory.db import Database, events
from aifactory.db import engines as engine_db
from aifactory.db import nodes as node_db
from aifactory.engine import EngineRunner, EngineSpec
from aifactory.settings import Settings

log = logging.getLogger("aifactory")

TICK = 0.5  # seconds between two looks at the database for commands
MAX_BACKOFF = 60.0  # longest wait before restarting an engine that keeps crashing
STOP_TIMEOUT = 30.0  # how long an engine gets to finish its step when asked to stop


def resolve_node_id(settings: Settings, role: str) -> str:
    """NODE_ID if set; else an id generated once and kept in DATA_DIR, so a restart keeps its identity."""
    if settings.node_id:
        return settings.node_id
    path = Path(settings.data_dir) / f"node_id_{role}"
    if path.exists():
        stored = path.read_text().strip()
        if stored:
            return stored
    node_id = f"{role}-{socket.gethostname()[:40]}-{uuid.uuid4().hex[:6]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(node_id + "\n")
    return node_id


class Node:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        specs: list[EngineSpec],
        *,
        role: str | None = None,
        node_id: str | None = None,
        api_url: str = "",
    ) -> None:
        self.settings = settings
        self.db = db
        self.role = role or settings.system_role
        self.specs = {spec.name: spec for spec in specs if self.role in spec.roles}
        # Engines Ignite/Stop leave alone (they run from the node's start until stopped on their own).
        self.independent = tuple(name for name, spec in self.specs.items() if not spec.follows_ignite)
        self.node_id = node_id or resolve_node_id(settings, self.role)
        self.instance_id = uuid.uuid4().hex[:16]
        self.api_url = api_url
        self.runners: dict[str, EngineRunner] = {}
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0
        self._last_prune = 0.0
        self.lost = False  # another process took over our node id

    # --- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Register the node (refusing a duplicate) and start supervising in a background thread."""
        node_db.register(
            self.db,
            node_id=self.node_id,
            role=self.role,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            instance_id=self.instance_id,
            version=__version__,
            api_url=self.api_url,
            alive_window=self.settings.node_offline_window_sec,
        )
        engine_db.ensure(self.db, self.node_id, list(self.specs), running=self.independent)
        psutil.cpu_percent(interval=None)  # prime the CPU sampler; its first reading is meaningless
        resumed = [
            name
            for name, want in engine_db.desired_states(self.db, self.node_id).items()
            if want == "running"
        ]
        note = f"; resuming {', '.join(sorted(resumed))}" if resumed else ""
        self.event(f"node {self.node_id} ({self.role}) started, pid {os.getpid()}{note}")
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every engine (keeping what the user wanted them to do) and mark the node stopped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for runner in self.runners.values():
            runner.request_stop()
        deadline = time.monotonic() + timeout
        for name, runner in self.runners.items():
            runner.join(max(1.0, deadline - time.monotonic()))
            if not runner.alive():
                engine_db.report(self.db, self.node_id, name, phase="stopped")
        self.runners.clear()
        node_db.mark_stopped(self.db, self.node_id, self.instance_id)
        self.event(f"node {self.node_id} stopped")

    def wake(self) -> None:
        """Look at the database now instead of at the next tick (after a local API call)."""
        self._wake.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    # --- the supervisor loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a database outage must not kill the supervisor; it retries next tick
                log.exception("supervisor tick failed; retrying")
            self._wake.wait(TICK)
            self._wake.clear()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.node_heartbeat_interval_sec:
            self._last_heartbeat = now
            self.heartbeat()
            if self.lost:
                return
        command = node_db.pending_command(self.db, self.node_id)
        if command is not None:
            desired = "running" if command.action == "start" else "stopped"
            engine_db.set_desired(self.db, self.node_id, desired, exclude=self.independent)
            node_db.ack_command(self.db, self.node_id, command.seq)
            self.event(f"{'Ignite' if command.action == 'start' else 'Stop'}: all engines {desired}")
        self.reconcile()
        if self.role == "master" and now - self._last_prune > 3600:
            self._last_prune = now
            events.prune(self.db, self.settings.event_log_keep)

    def reconcile(self) -> None:
        """Start engines that should run, stop those that should not, restart crashed ones."""
        desired = engine_db.desired_states(self.db, self.node_id)
        now = time.monotonic()
        for name, spec in self.specs.items():
            want_running = desired.get(name) == "running"
            runner = self.runners.get(name)
            if runner is not None and not runner.alive():
                self._finished(name, runner, want_running)
                runner = None
            if want_running and runner is None and now >= self._not_before.get(name, 0.0):
                # Reported before the engine runs, so its own reports (even a crash at once) come after.
                # last_error stays: the last failure is worth seeing while the engine runs again.
                engine_db.report(self.db, self.node_id, name, started_at=self.db.now())
                self.runners[name] = EngineRunner(spec, self.settings, self.db, self.node_id)
            elif not want_running and runner is not None:
                if runner.stop_requested_at is None:
                    engine_db.report(self.db, self.node_id, name, phase="stopping")
                runner.request_stop()
                if runner.stop_requested_at and now - runner.stop_requested_at > STOP_TIMEOUT:
                    runner.join(1.0)  # terminates a child process that does not listen
            if not want_running:
                self._not_before.pop(name, None)
                self._failures.pop(name, None)

    def _finished(self, name: str, runner: EngineRunner, want_running: bool) -> None:
        del self.runners[name]
        runner.join(1.0)
        if runner.finished_with_error():
            failures = self._failures.get(name, 0) + 1
            self._failures[name] = failures
            delay = min(MAX_BACKOFF, 2.0 ** (failures - 1))
            engine_db.report(self.db, self.node_id, name, phase="error", restarts=failures)
            if want_running:
                self.event(
                    f"engine {name} failed; restarting in {delay:.0f}s (attempt {failures})", level="warning"
                )
        else:
            self._failures.pop(name, None)
            delay = 1.0  # an engine that returned on its own is started again (next cycle)
            engine_db.report(self.db, self.node_id, name, phase="stopped")
        self._not_before[name] = time.monotonic() + delay

    def heartbeat(self) -> None:
        running = any(runner.alive() for runner in self.runners.values())
        profile = resolve_profile(self.settings).as_dict()
        ok = node_db.heartbeat(
            self.db,
            self.node_id,
            self.instance_id,
            status="running" if running else "idle",
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_percent=psutil.virtual_memory().percent,
            profile=profile,
        )
        if not ok:
            self.lost = True
            self.event(f"node id {self.node_id} was taken over by another process; stopping", level="error")
            for runner in self.runners.values():
                runner.request_stop()
            self._stopping.set()

    # --- helpers -------------------------------------------------------------------------------------
    def event(self, message: str, level: str = "info") -> None:
        events.record(self.db, message, source="node", node_id=self.node_id, level=level)
