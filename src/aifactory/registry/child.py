"""The promotion gate in a child process, for the web process (which never imports torch): the gate may
evaluate the candidate or production. The child runs at low priority and sends back the result, the
refusal (rule and details) or the error; the caller waits in a worker thread, not the event loop."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from aifactory.registry import PromotionRefused, RegistryError
from aifactory.settings import Settings


def _promote(
    settings: Settings, checkpoint: str | None, force: bool | None, out: Any, parent_pid: int
) -> None:
    from aifactory.cluster import lifeline
    from aifactory.db.database import Database
    from aifactory.registry import gate

    lifeline.watch_parent(parent_pid, lambda: os._exit(lifeline.EXIT_ORPHANED))  # nobody waits any more
    os.nice(10)
    db = Database(settings.resolved_database_url(), pool_size=1)
    try:
        import torch

        torch.set_num_threads(max(1, settings.eval_threads))
        out.send(("ok", gate.promote(settings, db, checkpoint, force=force)))
    except PromotionRefused as exc:
        out.send(("refused", exc.rule, exc.details))
    except Exception as exc:  # everything else is the caller's error message
        out.send(("error", f"{exc}" if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"))
    finally:
        db.dispose()
        out.close()


def promote(settings: Settings, checkpoint: str | None, force: bool | None) -> dict[str, Any]:
    """gate.promote in a child process: its result, or PromotionRefused / RegistryError as it raised."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_promote, args=(settings, checkpoint, force, send, os.getpid()), daemon=True
    )
    process.start()
    send.close()
    try:
        if not receive.poll(settings.eval_time_budget_sec * 3):
            process.terminate()
            # It may have been past the move: production moves by compare-and-set, so it moved or not.
            raise RegistryError(
                "the promotion took too long (3 x EVAL_TIME_BUDGET_SEC) and was stopped; "
                "GET /api/models says whether production moved"
            )
        message = receive.recv()
    except EOFError:
        raise RegistryError(
            "the promotion process ended without an answer; GET /api/models says whether production moved"
        ) from None
    finally:
        receive.close()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join(5)
    if message[0] == "ok":
        return dict(message[1])
    if message[0] == "refused":
        raise PromotionRefused(message[1], message[2])
    raise RegistryError(message[1])
