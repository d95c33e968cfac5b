"""Small real engines for testing the node: they do visible work (counters) and obey stop."""

from __future__ import annotations

import os

from aifactory.engine import EngineContext, EngineSpec


def tick(ctx: EngineContext) -> None:
    """Counts ticks until asked to stop."""
    ctx.set_phase("running", f"pid {os.getpid()}")
    while True:
        ctx.count(ticks=1)
        if ctx.wait(0.05):
            break
    ctx.flush()


def crash(ctx: EngineContext) -> None:
    raise RuntimeError("boom: a bug in an engine")


TICKER = EngineSpec("ticker", tick, "counts ticks", roles=("master", "worker"))
SECOND = EngineSpec("second", tick, "counts ticks too", roles=("master",))
PROCESS_TICKER = EngineSpec(
    "proc", tick, "counts ticks in its own process", roles=("master",), own_process=True
)
CRASHER = EngineSpec("crasher", crash, "fails every time", roles=("master",))
