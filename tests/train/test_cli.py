"""`aifactory train` and `aifactory model info` as a person runs them, and under torchrun with DDP."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aifactory.train.checkpoint import CheckpointStore
from tests.processes import ROOT, env_for
from tests.train.tiny import TINY, corpus_text

SETTINGS = {key.upper(): value for key, value in TINY.items()}


def run(*args: str, cwd: Path, timeout: float = 120, **settings: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env_for(PYTHONPATH=ROOT, **{**SETTINGS, **settings}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(4000))
    return path


def test_train_says_what_it_trains_on_and_resumes_where_it_stopped(tmp_path: Path, corpus: Path) -> None:
    first = run("-m", "aifactory", "train", "--steps", "6", "--text-file", str(corpus), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "UTF-8 bytes as tokens" in first.stdout and "a new model" in first.stdout
    assert "6/6" in first.stdout and "saved step 6" in first.stdout
    second = run("-m", "aifactory", "train", "--steps", "4", "--text-file", str(corpus), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming at step 6" in second.stdout and "saved step 10" in second.stdout
    info = run("-m", "aifactory", "model", "info", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "latest: " in info.stdout and "step 10," in info.stdout
    assert "2L 4H/2kv 32d vocab 256" in info.stdout and "tokenizer utf8-bytes" in info.stdout


def test_train_without_data_and_info_without_checkpoints_explain_themselves(tmp_path: Path) -> None:
    no_data = run("-m", "aifactory", "train", "--steps", "5", cwd=tmp_path)
    assert no_data.returncode == 2 and "--text-file" in no_data.stderr
    nothing = run("-m", "aifactory", "model", "info", cwd=tmp_path)
    assert nothing.returncode == 1 and "no checkpoint in data/checkpoints yet" in nothing.stdout


def test_ctrl_c_stops_after_the_current_step_and_saves(tmp_path: Path, corpus: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "train", "--steps", "100000", "--text-file", str(corpus)],
        cwd=tmp_path,
        env=env_for(PYTHONPATH=ROOT, **SETTINGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        while not proc.stdout.readline().startswith("["):  # a progress line: steps were taken
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping after this step" in err
    step = CheckpointStore(tmp_path / "data" / "checkpoints").load("latest").meta["step"]
    assert step > 0 and f"saved step {step}" in out


def logged_losses(data_dir: Path) -> list[tuple[int, float]]:
    with sqlite3.connect(data_dir / "aifactory.db") as conn:
        return conn.execute("SELECT step, train_loss FROM training_metrics ORDER BY id").fetchall()


def test_ddp_on_two_gloo_processes_matches_one_process(tmp_path: Path, corpus: Path) -> None:
    """torchrun with 2 CPU processes x batch 4 = one process x batch 8: same losses, same weights."""
    common = dict(TRAIN_GRAD_ACCUM_STEPS=2, VAL_EVAL_EVERY=2, PYTORCH_CPU_THREADS=1, OMP_NUM_THREADS=1)
    args = ("train", "--steps", "4", "--text-file", str(corpus))
    single = run(
        "-m", "aifactory", *args, cwd=tmp_path, DATA_DIR=tmp_path / "one", TRAIN_BATCH_SIZE=8, **common
    )
    assert single.returncode == 0, single.stderr
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aifactory")
    ddp = run(
        *torchrun, *args, cwd=tmp_path, timeout=240, DATA_DIR=tmp_path / "two", TRAIN_BATCH_SIZE=4, **common
    )
    assert ddp.returncode == 0, ddp.stderr
    assert "x 2 processes" in ddp.stdout and "DDP rank 0/2" in ddp.stdout
    assert ddp.stdout.count("saved step 4") == 1  # rank 0 alone reports (and writes)
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert [step for step, _ in one] == [step for step, _ in two] == [1, 2, 3, 4]
    assert torch.allclose(torch.tensor([x for _, x in one]), torch.tensor([x for _, x in two]), atol=1e-5)
    a = CheckpointStore(tmp_path / "one" / "checkpoints").load("latest")
    b = CheckpointStore(tmp_path / "two" / "checkpoints").load("latest")
    assert a.meta["state"]["tokens_seen"] == b.meta["state"]["tokens_seen"] == 4 * 8 * 32 * 2
    assert a.meta["state"]["val_loss"] == pytest.approx(b.meta["state"]["val_loss"], abs=1e-5)
    assert all(torch.allclose(a.weights[name], b.weights[name], atol=1e-5) for name in a.weights)
