"""Small real engines for testing the node: they do visible work (counters) and obey stop."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from aifactory.cluster import lifeline
from aifactory.cluster.context import EngineContext
from aifactory.cluster.registry import EngineSpec


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


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pooled(ctx: EngineContext) -> None:
    """Keeps a process pool (like the text engine's) with a worker in it, and ticks."""
    with lifeline.process_pool(1) as pool:
        worker = pool.submit(_sleep, 0.0).result()
        ctx.set_phase("running", f"pool worker pid {worker}")
        while not ctx.wait(0.05):
            ctx.count(ticks=1)


def die(ctx: EngineContext) -> None:
    """An engine process that is killed without a word (as by the OOM killer)."""
    ctx.set_phase("running", f"pid {os.getpid()}")
    os.kill(os.getpid(), signal.SIGKILL)


def save_on_stop(ctx: EngineContext) -> None:
    """Ticks; when asked to stop (by the node or by SIGTERM), writes DATA_DIR/saved-<pid>."""
    ctx.set_phase("running", f"pid {os.getpid()}")
    while not ctx.wait(0.05):
        ctx.count(ticks=1)
    Path(ctx.settings.data_dir).mkdir(parents=True, exist_ok=True)
    Path(ctx.settings.data_dir, f"saved-{os.getpid()}").write_text("saved\n")


def tiny_trainer(ctx: EngineContext) -> None:
    """The real trainer engine (cycles, evaluations, checkpoints) on the tiny byte corpus."""
    from aifactory.train.engine import run_trainer
    from tests.train.tiny import corpus_source

    run_trainer(ctx, lambda _settings: corpus_source(), poll_sec=0.05)


TICKER = EngineSpec("ticker", "tests.sample_engines:tick", "counts ticks", roles=("master", "worker"))
SECOND = EngineSpec("second", tick, "counts ticks too (a function, not a name)", roles=("master",))
PROCESS_TICKER = EngineSpec(
    "proc",
    "tests.sample_engines:tick",
    "counts ticks in its own process",
    roles=("master",),
    own_process=True,
)
CRASHER = EngineSpec("crasher", crash, "fails every time", roles=("master",))
POOLED = EngineSpec("pooled", "tests.sample_engines:pooled", "ticks next to a process pool")
PROCESS_POOLED = EngineSpec(
    "procpool", "tests.sample_engines:pooled", "a process pool inside an engine process", own_process=True
)
DIER = EngineSpec("dier", "tests.sample_engines:die", "killed by a signal", own_process=True)
SAVER = EngineSpec("saver", "tests.sample_engines:save_on_stop", "saves when stopped", own_process=True)
TINY_TRAINER = EngineSpec("trainer", "tests.sample_engines:tiny_trainer", "tiny trainer", own_process=True)
