"""Start real factory processes for tests (`aifactory up`, workers) and stop them reliably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def env_for(**values: object) -> dict[str, str]:
    """The test process's environment plus settings; AUTO_TUNE off keeps runs comparable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update({"AUTO_TUNE": "0", "PYTHONUNBUFFERED": "1"})
    env.update({key: str(value) for key, value in values.items()})
    return env


def aifactory(*args: str, cwd: Path, timeout: float = 60, **settings: object) -> subprocess.CompletedProcess:
    """Run `aifactory ARGS...` to the end with these settings; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "aifactory", *args],
        cwd=cwd,
        env=env_for(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_factory(port: int, cwd: Path, module: str = "aifactory", **settings: object) -> subprocess.Popen:
    """`aifactory up` on 127.0.0.1:port (or `python -m module`); returns once /healthz answers."""
    command = (
        [sys.executable, "-m", "aifactory", "up"] if module == "aifactory" else [sys.executable, "-m", module]
    )
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env_for(PORT=port, HOST="127.0.0.1", PYTHONPATH=ROOT, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def start_worker(cwd: Path, **settings: object) -> subprocess.Popen:
    """A worker node running the sample ticker engine (tests/worker_process.py)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process"],
        cwd=cwd,
        env=env_for(PYTHONPATH=ROOT, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered:\n{output}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> str:
    """Send `sig`, wait for the exit (kill after `timeout`), return everything the process printed."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stdout.read() if proc.stdout else ""
