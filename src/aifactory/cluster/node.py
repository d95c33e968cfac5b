"""A node: one process of the factory, with its heartbeat and the supervisor of its engines.

A master (`aifactory up`) runs every engine of its role next to the web server; a worker (`aifactory
worker`) runs the collection engines. The node never takes orders in memory: the dashboard (of any
node) writes commands and per-engine wishes into the database, and each node converges on them every
TICK seconds. That is what lets a restarted node resume what was running, and one dashboard drive a
whole cluster.

The node stops itself, engines first, when it can no longer be sure it is who it claims to be: another
process took its node id over, or (a master) another master took the master lease. Its owner (the web
server, the worker loop) waits on `wait_stopped()` and exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import psutil

from aifactory import __version__
from aifactory.autotune import resolve_profile
from aifactory.cluster import commands, engine_state, membership
from aifactory.cluster.lease import MasterLease
from aifactory.cluster.registry import EngineSpec
from aifactory.cluster.runner import EngineRunner
from aifactory.cluster.supervisor import Supervisor
from aifactory.db import Database, events
from aifactory.settings import Settings

log = logging.getLogger("aifactory")

TICK = 0.5  # seconds between two looks at the database for commands
PRUNE_EVERY = 3600.0  # the master trims the event log this often


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
        self.node_id = node_id or membership.resolve_node_id(settings, self.role)
        self.instance_id = uuid.uuid4().hex[:16]
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.api_url = api_url
        self.supervisor = Supervisor(settings, db, self.node_id, self.specs)
        self.lease = (
            MasterLease(
                db,
                instance_id=self.instance_id,
                hostname=self.hostname,
                description=f"node {self.node_id} on {self.hostname}",
            )
            if self.role == "master"
            else None
        )
        self.lost = ""  # why the node stopped itself, if it did
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_timeout = settings.engine_stop_timeout_sec
        self._last_heartbeat = 0.0
        self._last_prune = 0.0

    @property
    def runners(self) -> dict[str, EngineRunner]:
        return self.supervisor.runners

    # --- life cycle --------------------------------------------------------------------------------
    def take_master_lease(self) -> None:
        """A master takes the lease before anything else (before migrating the schema, too)."""
        if self.lease is not None:
            self.lease.acquire()

    def start(self) -> None:
        """Register the node (refusing a live duplicate) and start supervising in a background thread."""
        self.take_master_lease()
        self.db.node_id = self.node_id  # the counters this process adds are this node's
        try:
            took_over = self._register()
        except BaseException:
            if self.lease is not None:
                self.lease.release()
            raise
        psutil.cpu_percent(interval=None)  # prime the CPU sampler; its first reading is meaningless
        wants = engine_state.desired_states(self.db, self.node_id)
        resumed = sorted(name for name, want in wants.items() if want == "running")
        note = f"; taking over from {took_over}" if took_over else ""
        note += f"; resuming {', '.join(resumed)}" if resumed else ""
        self.event(f"node {self.node_id} ({self.role}) started, pid {self.pid}{note}")
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def _register(self, desired: dict[str, str] | None = None) -> str:
        registration = membership.register(
            self.db,
            node_id=self.node_id,
            role=self.role,
            hostname=self.hostname,
            pid=self.pid,
            instance_id=self.instance_id,
            version=__version__,
            api_url=self.api_url,
            alive_window=self.settings.node_offline_window_sec,
            started=membership.process_started(self.pid),
        )
        # New engines (a new node, an engine added by an upgrade) follow the cluster's last Ignite/Stop.
        default = commands.desired_for_new_engines(self.db, self.role)
        wants = {
            name: (desired or {}).get(name, "running" if name in self.independent else default)
            for name in self.specs
        }
        engine_state.ensure(self.db, self.node_id, list(self.specs), desired=wants)
        return registration.took_over

    def stop(self, timeout: float | None = None) -> None:
        """Stop every engine (keeping what the user wanted them to do) and mark the node stopped."""
        if timeout is not None:
            self._stop_timeout = timeout
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._stop_timeout + 15)  # the loop's last act is stopping the engines
            if self._thread.is_alive():
                log.warning("the supervisor did not finish stopping the engines; the lifeline ends them")
        membership.mark_stopped(self.db, self.node_id, self.instance_id)
        if self.lease is not None:
            self.lease.release()
        self.event(f"node {self.node_id} stopped" + (f" ({self.lost})" if self.lost else ""))

    def wake(self) -> None:
        """Look at the database now instead of at the next tick (after a local API call)."""
        self._wake.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    # --- the loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.tick()
                except Exception:  # a database outage must not kill the supervisor; it retries next tick
                    log.exception("supervisor tick failed; retrying")
                self._wake.wait(TICK)
                self._wake.clear()
        finally:
            self.supervisor.shutdown(self._stop_timeout)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.node_heartbeat_interval_sec:
            self._last_heartbeat = now
            self.heartbeat()
            if self.lost:
                return
        command = commands.pending_command(self.db, self.node_id)
        if command is not None:
            desired = "running" if command.action == "start" else "stopped"
            engine_state.set_desired(self.db, self.node_id, desired, exclude=self.independent)
            commands.ack_command(self.db, self.node_id, command.seq)
            self.event(f"{'Ignite' if command.action == 'start' else 'Stop'}: all engines {desired}")
        self.supervisor.tick()
        if self.role == "master" and now - self._last_prune > PRUNE_EVERY:
            self._last_prune = now
            events.prune(self.db, self.settings.event_log_keep)

    def heartbeat(self) -> None:
        running = any(runner.alive() for runner in self.runners.values())
        state = membership.heartbeat(
            self.db,
            self.node_id,
            self.instance_id,
            status="running" if running else "idle",
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_percent=psutil.virtual_memory().percent,
            profile=resolve_profile(self.settings).as_dict(),
        )
        if state == "gone":  # removed as stale while we were silent: we are alive, so we come back
            self._register(desired=self.supervisor.desired)
            self.event(f"node {self.node_id} was removed from the node list while running; registered again")
        elif state == "taken":
            self._lose(f"node id {self.node_id} was taken over by another process")
        if self.lease is not None and not self.lost and self.lease.check() == "lost":
            self._lose("another master took the master lease while this one could not reach the database")

    def _lose(self, reason: str) -> None:
        self.lost = reason
        self.event(f"{reason}; stopping", level="error")
        self._stopping.set()

    def event(self, message: str, level: str = "info") -> None:
        events.record(self.db, message, source="node", node_id=self.node_id, level=level)
