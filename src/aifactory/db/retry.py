"""Database errors, told apart: a database that is away for a while, or a row that can never be written.

Transient: the connection dropped, the server restarts, a lock or deadlock between nodes, a statement
cancelled, SQLite busy. The same work succeeds later, so it is retried with back-off; if the database is
still away after the retry budget, `DatabaseUnavailable` is raised and the engine ends with it (the node's
supervisor restarts it with its own back-off), rather than dropping work and starting it again at once.

Permanent: a value that does not fit its column, a constraint, bad SQL. Retrying fails the same way
every time, so the caller isolates the one row at fault, records it as failed and carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

log = logging.getLogger("aifactory.db")
T = TypeVar("T")
FIRST_WAIT_SEC = 0.1
LONGEST_WAIT_SEC = 5.0


class DatabaseUnavailable(Exception):
    """Transient database errors went on for longer than the retry budget."""


def is_transient(exc: BaseException) -> bool:
    """Whether the same statement may succeed if tried again later."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    # OperationalError covers lost connections, server shutdown, deadlocks, serialization failures,
    # lock timeouts, cancelled statements (PostgreSQL) and "database is locked" (SQLite).
    return isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError | sa.exc.DisconnectionError
    )


def call(
    fn: Callable[..., T],
    *args: object,
    budget: float,
    stop: threading.Event | None = None,
    what: str = "",
    **kwargs: object,
) -> T:
    """`fn(*args, **kwargs)`, retried with exponential back-off while it fails transiently, for at most
    `budget` seconds (or until `stop` is set). Permanent errors are raised at once."""
    deadline = time.monotonic() + budget
    wait = FIRST_WAIT_SEC
    tries = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            tries += 1
            left = deadline - time.monotonic()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            if left <= 0 or (stop is not None and stop.is_set()):
                raise DatabaseUnavailable(
                    f"{what or getattr(fn, '__name__', 'database call')}: database unavailable after "
                    f"{tries} tries: {reason}"
                ) from exc
            log.warning(
                "%s failed (try %d), retrying: %s", what or getattr(fn, "__name__", "call"), tries, reason
            )
            pause = min(wait, left)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            wait = min(wait * 2, LONGEST_WAIT_SEC)
