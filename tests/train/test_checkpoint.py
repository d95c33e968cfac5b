"""Checkpoints: atomic against SIGKILL, verified on load, never unpickling code, one writer at a time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aifactory.train import checkpoint as checkpoint_module
from aifactory.train.checkpoint import CheckpointError, CheckpointStore
from tests.processes import ROOT, env_for


def save_step(store: CheckpointStore, step: int, pointers: tuple[str, ...] = ("latest",)) -> Path:
    weights = {"w": torch.full((8, 8), float(step))}
    optimizer = {
        "state": {0: {"exp_avg": torch.full((8, 8), -float(step))}},
        "param_groups": [{"params": [0]}],
    }
    return store.save(weights, {"step": step, "state": {"step": step}}, optimizer, pointers)


def test_save_and_load_round_trip_with_latest_backup_and_best(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_snapshots=0)
    first = save_step(store, 1)
    second = save_step(store, 2)
    best = save_step(store, 2, ("best",))
    loaded = store.load("latest")
    assert loaded.directory == second and loaded.meta["step"] == 2
    assert torch.equal(loaded.weights["w"], torch.full((8, 8), 2.0))
    assert torch.equal(loaded.optimizer["state"][0]["exp_avg"], torch.full((8, 8), -2.0))
    assert store.pointer("backup") == first  # the checkpoint latest replaced
    assert store.pointer("best") == best and store.load("best", optimizer=False).optimizer is None
    save_step(store, 3)
    # With no older snapshots to keep, only what a pointer names is: latest (3), backup (2) and best.
    assert {p.name for p in tmp_path.glob("step-*")} == {
        store.pointer(n).name for n in ("latest", "backup", "best")
    }
    assert not first.exists()


def test_a_truncated_latest_names_the_file_and_falls_back_to_the_backup(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    good = save_step(store, 1)
    broken = save_step(store, 2)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{weights} is truncated or corrupt"):
        store.load("latest")
    checkpoint, problem = store.load_for_resume()
    assert checkpoint.directory == good and checkpoint.meta["step"] == 1
    assert str(weights) in problem and "resumed from the backup" in problem
    assert store.pointer("latest") == good  # the next save's backup is a good checkpoint
    assert (tmp_path / (broken.name + ".corrupt")).exists()  # kept for inspection


def test_flipped_bytes_and_bad_json_are_errors_naming_the_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    directory = save_step(store, 1)
    blob = bytearray((directory / "optimizer.pt").read_bytes())
    blob[-40] ^= 0xFF
    (directory / "optimizer.pt").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"optimizer\.pt is corrupt: its sha256"):
        store.load("latest")
    (directory / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"meta\.json is not valid JSON"):
        store.load("latest")


def test_when_latest_and_backup_are_both_broken_resuming_is_an_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for step in (1, 2):
        (save_step(store, step) / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="the backup cannot be loaded either"):
        store.load_for_resume()


def test_no_checkpoint_at_all_is_a_fresh_start(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "empty").load_for_resume() == (None, "")


def test_optimizer_state_never_unpickles_code(tmp_path: Path) -> None:
    """Even a file whose hash was updated to match (an attacker with write access) runs no code."""
    store = CheckpointStore(tmp_path)
    directory = save_step(store, 1)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"state": Exploit()}, buffer, pickle_module=pickle)
    blob = buffer.getvalue()
    (directory / "optimizer.pt").write_bytes(blob)
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"]["optimizer.pt"] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"optimizer\.pt cannot be read"):
        store.load("latest")
    assert not marker.exists()


@pytest.mark.parametrize("fail_in", ["write_durably", "fsync_dir", "atomic_write"])
def test_a_crash_at_any_stage_of_a_save_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch, fail_in
) -> None:
    store = CheckpointStore(tmp_path)
    save_step(store, 1)
    original = getattr(checkpoint_module, fail_in)
    calls = {"n": 0}

    def crash_on_second_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, fail_in, crash_on_second_call)
    with pytest.raises(OSError, match="simulated crash"):
        save_step(store, 2)
    monkeypatch.undo()
    assert store.load("latest").meta["step"] == 1
    save_step(store, 3)  # the next save works and clears what the crash left behind
    assert not list(tmp_path.glob("*.partial"))
    assert store.load("latest").meta["step"] == 3


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    root, rng = tmp_path / "checkpoints", random.Random(7)
    torn = 0
    for trial in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.train.checkpoint_writer", str(root)],
            cwd=ROOT,
            env=env_for(PYTHONPATH=ROOT),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline().startswith("saved")
            if trial % 2:  # every other kill aims at a write in progress (saves stream: short windows)
                deadline = time.monotonic() + 30
                while not list(root.glob("*.partial")) and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.0, 0.01))
            else:
                time.sleep(rng.uniform(0.0, 0.15))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
        torn += bool(list(root.glob("*.partial")))  # killed in the middle of writing a checkpoint
        store = CheckpointStore(root)
        steps = {}
        for name in ("latest", "backup"):
            if name == "backup" and store.pointer("backup") is None:
                continue  # killed before the first save had a predecessor
            checkpoint = store.load(name)
            steps[name] = step = checkpoint.meta["step"]
            assert all(torch.equal(t, torch.full_like(t, float(step))) for t in checkpoint.weights.values())
            assert float(checkpoint.optimizer["state"][0]["step"]) == step
        # A kill between moving `backup` and `latest` leaves both on the previous checkpoint: still valid.
        assert steps.get("backup", 0) <= steps["latest"]
    assert torn >= 1, "no kill landed during a write: the test proved nothing"


PROBE = """
import sys
from pathlib import Path
from aifactory.train.checkpoint import CheckpointStore
try:
    CheckpointStore(Path(sys.argv[1])).lock().__enter__()
except Exception as exc:
    print(exc)
"""


def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with store.lock():
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                PROBE,
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env_for(),
        )
    assert f"{tmp_path} is in use by another trainer (pid {os.getpid()})" in probe.stdout
