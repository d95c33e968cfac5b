"""A parent process for the lifeline tests: `python -m tests.cluster.orphans pool|engine DIR`.

It starts children the way a node does (a process pool; an engine process), writes their pids to
DIR/children, and waits to be killed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

from aifactory.cluster import lifeline


def worker_pid(_: int) -> int:
    time.sleep(0.2)  # long enough that both workers take a task
    return os.getpid()


def engine_process(parent: int, out: str) -> None:
    stop = lifeline.ProcessStop()
    lifeline.bind_engine_process(parent, stop, grace=30)
    while not stop.wait(0.05):
        pass
    Path(out, f"saved-{os.getpid()}").write_text("saved\n")  # stop and save


def main(kind: str, out: str) -> None:
    if kind == "pool":
        pool = lifeline.process_pool(2)
        pids = sorted(set(pool.map(worker_pid, range(4))))
    else:
        child = multiprocessing.get_context("spawn").Process(target=engine_process, args=(os.getpid(), out))
        child.start()
        pids = [child.pid]
    Path(out, "children").write_text(" ".join(str(pid) for pid in pids))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
