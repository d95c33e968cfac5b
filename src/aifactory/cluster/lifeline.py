"""Child processes die with their node, however the node dies (clean exit, kill -9, the OOM killer).

Every process a node starts is tied to it:
  engine processes (the trainer, inference...)  SIGTERM and the node's death both mean "stop and save":
      the engine's stop signal is set, it finishes its step and saves; one that has not ended
      ENGINE_STOP_TIMEOUT_SEC later exits anyway. SIGINT is ignored: Ctrl-C reaches the whole process
      group, and the node stops its engines itself.
  pool workers (text pipeline, dataset encoders)  end at once when their owner is gone: they hold
      nothing worth saving, and their owner's work in flight is redone after a restart.

Two mechanisms: on Linux the kernel sends the parent-death signal (prctl PR_SET_PDEATHSIG) the moment
the parent goes; on every OS a watchdog thread sees `os.getppid()` change within half a second. Pool
workers rely on the watchdog alone, because the kernel ties the parent-death signal to the *thread*
that started the child, and a pool may start workers from any thread of its owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger("aifactory")

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 75  # the exit code of a child that ended because its node was gone
WATCH_INTERVAL = 0.5


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, on_orphaned: Callable[[], None]) -> threading.Thread:
    """Call `on_orphaned` (in a daemon thread) once this process's parent is no longer `parent_pid`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCH_INTERVAL)
        on_orphaned()

    thread = threading.Thread(target=watch, name="lifeline", daemon=True)
    thread.start()
    return thread


class ProcessStop:
    """The stop signal of an engine process. Its node asks it to stop with SIGTERM, like systemd or
    `docker stop` would, and its death sets it too: one way in, whoever asks. (A multiprocessing Event
    would not do: setting one waits for every process sleeping on it to wake, and a child that was
    frozen or killed while it slept would hang the node.) The signal handler only flips a flag."""

    SLICE = 0.1  # how often a waiting engine looks at the flag

    def __init__(self) -> None:
        self.requested = False

    def is_set(self) -> bool:
        return self.requested

    def set(self) -> None:
        self.requested = True

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            left = self.SLICE if deadline is None else min(self.SLICE, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True


def bind_engine_process(
    parent_pid: int, stop: ProcessStop, grace: float, *, death_signal: bool = True
) -> None:
    """First thing in an engine's own process: SIGTERM and the node's death mean stop and save.

    `death_signal=False` for a child started from a thread that may end before it (a web server's
    worker thread): the kernel would send the parent-death signal when that thread ends, so such a
    child relies on the watchdog alone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if death_signal:
        set_parent_death_signal(signal.SIGTERM)

    def orphaned() -> None:
        log.warning("the node (pid %s) is gone: stopping this engine process", parent_pid)
        stop.set()
        time.sleep(grace)
        log.error("the engine did not stop %.0fs after its node died; exiting", grace)
        os._exit(EXIT_ORPHANED)

    watch_parent(parent_pid, orphaned)


@contextlib.contextmanager
def leave_at_once_on_sigterm(stop: ProcessStop) -> Iterator[None]:
    """While an engine process is still loading its code (torch takes seconds), there is nothing to save:
    a stop request ends the process at once instead of after the import."""
    if stop.is_set():
        sys.exit(0)

    def leave(*_: object) -> None:
        stop.set()
        sys.exit(0)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pool_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner shuts the pool down on Ctrl-C
    watch_parent(parent_pid, lambda: os._exit(EXIT_ORPHANED))
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A process pool whose workers end with this process. Spawned, not forked: a node holds threads
    and database connections a fork would copy in an undefined state."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_pool_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
