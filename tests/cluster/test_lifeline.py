"""Children die with their parent, however it dies: pool workers at once, engine processes after saving."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from aifactory.cluster import lifeline
from tests.conftest import wait_for
from tests.processes import ROOT, env_for


def gone(pid: int) -> bool:
    """Not running (a zombie waiting for a reaper holds no memory and counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_parent(kind: str, tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.orphans", kind, str(tmp_path)],
        cwd=ROOT,
        env=env_for(PYTHONPATH=ROOT),
    )
    pids = wait_for(lambda: (tmp_path / "children").exists() and (tmp_path / "children").read_text(), 60)
    return parent, [int(pid) for pid in str(pids).split()]


def test_pool_workers_die_when_their_owner_is_killed(tmp_path: Path) -> None:
    parent, workers = start_parent("pool", tmp_path)
    assert len(workers) == 2 and all(not gone(pid) for pid in workers)
    everything = [p.pid for p in psutil.Process(parent.pid).children(recursive=True)]
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    wait_for(lambda: all(gone(pid) for pid in everything), 30, "the workers and the resource tracker to end")


def test_an_engine_process_stops_and_saves_when_its_node_is_killed(tmp_path: Path) -> None:
    parent, [engine] = start_parent("engine", tmp_path)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    wait_for(lambda: gone(engine), 30, "the engine process to end")
    assert (tmp_path / f"saved-{engine}").read_text() == "saved\n"


def test_the_parent_death_signal_is_available_here() -> None:
    """Linux delivers it; elsewhere the watchdog alone does the job (and this is skipped)."""
    if sys.platform.startswith("linux"):
        assert lifeline.set_parent_death_signal(0)  # 0 clears it: the call itself works
