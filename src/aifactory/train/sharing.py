"""How the trainer shares the machine: the load others publish, and the one controller that decides the
trainer's CPU threads and priority from it.

On one machine the trainer and the chat share the cores. The inference engine publishes its load in
DATA_DIR/serve/load.json (requests in flight, queue, loaded models; rewritten atomically when it changes
and every two seconds). While requests are in flight the trainer *yields*: it keeps
TRAIN_YIELD_THREADS torch threads and raises its niceness by TRAIN_YIELD_NICE, so a person chatting
sees a fluent stream; LINGER_SEC after the last request it takes its threads and priority back.
Lowering a niceness again needs privilege (root, CAP_SYS_NICE or RLIMIT_NICE): without it the trainer
yields threads only, so it is never left slowed down for good.

With PYTORCH_CPU_THREADS on auto the trainer's threads also follow the cores the rest of the machine
leaves free (issue 14): a CpuMeter reads how many cores other processes kept busy over the last
METER_SEC (/proc/stat minus this process's own CPU time), so the trainer takes every core while the
collector and the text engines sit idle, and fewer while they work; the chat's yield comes on top.

LoadController.decide is a pure function of the load, so the rules are easy to read and to test;
other sources of load join through `Load`. No torch at import: the web process reads the load file
through this module too.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory.settings import Settings

LOAD_STALE_SEC = 10.0  # a load file older than this belongs to a process that is gone
CHECK_EVERY_SEC = 0.25  # how often the trainer looks at the load (between micro-batches)
LINGER_SEC = 3.0  # stay yielded this long after the last request: a chat has pauses between turns
METER_SEC = 2.0  # the window the CPU use of other processes is measured over
BUSY_MARGIN = 0.25  # another process's core counts as taken above this share of it (noise below)


def load_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "serve" / "load.json"


def publish_load(settings: Settings, state: dict[str, Any]) -> None:
    """Atomically replace load.json (readers see the old or the new state, never half of one)."""
    path = load_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({**state, "pid": os.getpid(), "updated_at": time.time()}))
    os.replace(temporary, path)


def read_load(settings: Settings) -> dict[str, Any]:
    """The inference engine's last published load; {} when there is none or it is stale."""
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(load_path(settings).read_text())
        if isinstance(state, dict) and time.time() - float(state.get("updated_at", 0)) <= LOAD_STALE_SEC:
            return state
    return {}


def clear_load(settings: Settings) -> None:
    with contextlib.suppress(OSError):
        load_path(settings).unlink()


@dataclass(frozen=True)
class Load:
    """What else the machine is doing that the trainer should make room for."""

    requests: int = 0  # generation requests in flight (decoding or waiting)
    others_busy: float = 0.0  # cores other processes kept busy lately (auto threads only)


class CpuMeter:
    """How many cores processes other than this one kept busy between two readings (Linux; elsewhere
    always 0, so the trainer keeps its threads)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float] | None:
        """(busy jiffies, all jiffies, own CPU seconds, wall seconds) of the whole machine now."""
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        total = sum(fields[:8])  # guest time is already counted in user
        times = os.times()
        return total - idle, total, times.user + times.system, time.monotonic()

    def others_busy(self, cores: int) -> float:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1] or now[3] <= last[3]:
            return 0.0
        busy_cores = (now[0] - last[0]) / (now[1] - last[1]) * (os.cpu_count() or cores)
        own_cores = (now[2] - last[2]) / (now[3] - last[3])
        return max(0.0, busy_cores - own_cores)


@dataclass(frozen=True)
class Plan:
    threads: int
    nice: int
    reason: str = ""  # why the trainer yields; "" when it does not

    @property
    def yielding(self) -> bool:
        return bool(self.reason)


def can_lower_niceness(to: int) -> bool:
    """Whether this process may go back to niceness `to` after raising it."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return True
    with contextlib.suppress(ValueError, OSError, AttributeError):
        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
        return soft == resource.RLIM_INFINITY or soft >= 20 - to
    return False


def set_niceness(nice: int) -> None:
    """Every thread of this process (Linux applies niceness per thread) to `nice`."""
    tasks = Path("/proc/self/task")
    ids = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in ids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, nice)


class LoadController:
    """Owned by the trainer: `poll()` between micro-batches applies the plan for the current load."""

    def __init__(self, settings: Settings, threads: int, auto_max: int = 0) -> None:
        """`threads`: the trainer's threads; `auto_max` > 0: follow the free cores, up to that many."""
        self.settings = settings
        self.auto_max = auto_max
        self.full_threads = max(1, auto_max or threads)
        self.meter = CpuMeter() if auto_max else None
        self._others_busy, self._metered = 0.0, time.monotonic()
        self.base_nice = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
        self.may_renice = settings.train_yield_nice > 0 and can_lower_niceness(self.base_nice)
        self.plan = Plan(self.full_threads, self.base_nice)
        self.changed_at = 0.0
        self._checked = 0.0
        self._busy_at = -LINGER_SEC

    def load(self, now: float | None = None) -> Load:
        state = read_load(self.settings)
        now = time.monotonic() if now is None else now
        if self.meter is not None and now - self._metered >= METER_SEC:
            self._others_busy, self._metered = self.meter.others_busy(self.auto_max), now
        return Load(requests=int(state.get("in_flight", 0)), others_busy=self._others_busy)

    def free_threads(self, load: Load) -> int:
        """All cores, less those other processes keep busy (auto); the fixed count otherwise."""
        if not self.auto_max:
            return self.full_threads
        taken = int(load.others_busy + 1 - BUSY_MARGIN) if load.others_busy > BUSY_MARGIN else 0
        return max(1, self.auto_max - taken)

    def decide(self, load: Load, lingering: bool = False) -> Plan:
        free = self.free_threads(load)
        if load.requests <= 0 and not lingering:
            return Plan(free, self.base_nice)
        threads = min(free, self.settings.train_yield_threads)
        nice = min(19, self.base_nice + self.settings.train_yield_nice) if self.may_renice else self.base_nice
        what = f"{load.requests} chat request{'s' if load.requests != 1 else ''}" if load.requests else "chat"
        return Plan(threads, nice, f"yielding to {what}")

    def poll(self, now: float | None = None) -> bool:
        """Look at the load (at most every CHECK_EVERY_SEC); True when the plan changed."""
        now = time.monotonic() if now is None else now
        if now - self._checked < CHECK_EVERY_SEC:
            return False
        self._checked = now
        load = self.load(now)
        if load.requests > 0:
            self._busy_at = now
        plan = self.decide(load, lingering=now - self._busy_at < LINGER_SEC)
        if plan == self.plan:
            return False
        self.apply(plan)
        self.changed_at = now
        return True

    def apply(self, plan: Plan) -> None:
        import torch  # only the trainer's process gets here

        if plan.threads != torch.get_num_threads():
            torch.set_num_threads(plan.threads)
        if plan.nice != self.plan.nice:
            try:
                set_niceness(plan.nice)
            except PermissionError:  # not allowed after all: keep the threads part of the plan
                self.may_renice = False
                plan = Plan(plan.threads, self.plan.nice, plan.reason)
        self.plan = plan

    def describe(self) -> str:
        """For the trainer's status: its threads and, while it yields, why (empty for fixed threads
        while not yielding)."""
        if not self.plan.yielding:
            if not self.auto_max:
                return ""
            word = "thread" if self.plan.threads == 1 else "threads"
            return f"{self.plan.threads} CPU {word} (auto, {self.auto_max} cores)"
        priority = f", nice {self.plan.nice}" if self.plan.nice != self.base_nice else ""
        thread_word = "thread" if self.plan.threads == 1 else "threads"
        return f"{self.plan.reason}: {self.plan.threads} {thread_word}{priority}"

    def restore(self) -> None:
        """Give the trainer its threads and priority back (when training stops)."""
        if self.plan.yielding:
            self.apply(Plan(self.full_threads, self.base_nice))
