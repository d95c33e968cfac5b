"""Never lose progress: a full disk, lost pointers, rollbacks, NaNs and restarts with another geometry."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aifactory.train import checkpoint as checkpoint_module
from aifactory.train.checkpoint import CheckpointDiskFull, CheckpointError, CheckpointStore
from aifactory.train.cycle import Hooks, finish, roll_back, run_cycle, run_cycle_with_recovery, save
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from aifactory.train.writer import CheckpointWriter
from tests.train.test_checkpoint import save_step
from tests.train.test_cycle import FlakySource, Recorder, started
from tests.train.tiny import corpus_source, tiny_settings


def test_the_streamed_weights_file_is_a_safetensors_file_of_every_dtype(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(4, 2).to(torch.bfloat16),
        "i64": torch.arange(7),
        "empty": torch.zeros(0, 3),
        "flag": torch.tensor([True, False]),
    }
    record = checkpoint_module.write_safetensors(tmp_path / "w.safetensors", tensors)
    data = (tmp_path / "w.safetensors").read_bytes()
    assert record["bytes"] == len(data)
    loaded = safetensors.torch.load(data)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_enospc_during_a_save_leaves_no_partial_directory_and_names_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    first = save_step(store, 1)
    real_write = checkpoint_module.HashingWriter.write
    written = [0]

    def write_until_full(self, data):  # the disk fills up in the middle of the weights
        written[0] += 1
        if written[0] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(checkpoint_module.HashingWriter, "write", write_until_full)
    with pytest.raises(CheckpointDiskFull, match=r"disk full: [\d.]+ GB free, checkpoint needs [\d.]+ GB"):
        save_step(store, 2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [first.name]  # no .partial left
    assert store.pointer("latest") == first and store.load("latest").meta["step"] == 1


def test_too_little_free_space_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(CheckpointDiskFull, match=r"disk full: 0\.00 GB free, checkpoint needs"):
        save_step(store, 1)
    assert not list(tmp_path.glob("step-*"))


def test_a_full_disk_loses_no_training_and_the_save_is_retried(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=100)
    recorder = Recorder()
    real_save = CheckpointStore.save
    full = [True]

    def save_on_a_full_disk(self, *args, **kwargs):
        if full[0]:
            raise CheckpointDiskFull("disk full: 0.00 GB free, checkpoint needs 0.01 GB")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "save", save_on_a_full_disk)
    result = run_cycle_with_recovery(trainer, store, recorder.hooks(), 10)
    assert result.steps == 10 and trainer.state.step == 10  # training went on, nothing rolled back
    errors = [m for level, m in recorder.messages if level == "error"]
    assert errors and "disk full: 0.00 GB free, checkpoint needs 0.01 GB" in errors[0]
    assert "tried again" in errors[0]
    assert store.read_meta("latest")[1]["step"] == 0
    full[0] = False
    run_cycle(trainer, store, recorder.hooks(), 2)
    assert store.read_meta("latest")[1]["step"] == 12  # the next save went through


def test_a_full_disk_in_the_background_writer_is_reported_and_training_goes_on(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=100)
    trainer.writer = CheckpointWriter(store)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    recorder = Recorder()
    run_cycle(trainer, store, recorder.hooks(), 3)
    trainer.writer.flush()
    run_cycle(trainer, store, recorder.hooks(), 1)  # the failure is reported on the training thread
    trainer.writer.close()
    assert trainer.state.step == 4
    assert any("disk full" in m and level == "error" for level, m in recorder.messages)
    assert not list(store.root.glob("*.partial"))


def test_stop_right_after_a_failed_background_save_still_saves_latest(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's save of the last step failed (the disk was full for a moment): Stop saves it again."""
    trainer, store = started(make_settings, tmp_path, val_eval_every=100)
    trainer.writer = CheckpointWriter(store)
    real_save = CheckpointStore.save
    failures = [1]

    def full_once(self, *args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise CheckpointDiskFull("disk full: 0.00 GB free, checkpoint needs 0.01 GB")
        return real_save(self, *args, **kwargs)

    recorder = Recorder()
    run_cycle(trainer, store, recorder.hooks(), 3)
    trainer.writer.flush()
    monkeypatch.setattr(CheckpointStore, "save", full_once)
    trainer.train_step()
    save(trainer, store, ("latest",), recorder.hooks().report)  # accepted by the writer, then fails
    finish(trainer, store, recorder.hooks())
    trainer.writer.close()
    assert any("disk full" in m and level == "error" for level, m in recorder.messages)
    assert store.read_meta("latest")[1]["step"] == trainer.state.step == 4


def test_deleting_both_pointers_resumes_from_the_newest_step_directory(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for step in (1, 2, 3):
        save_step(store, step)
    store.pointer_path("latest").unlink()
    store.pointer_path("backup").unlink()
    checkpoint, problem = store.load_for_resume()
    assert checkpoint is not None and checkpoint.meta["step"] == 3
    assert "rebuilt the pointer from step-000000003" in problem
    assert store.read_meta("latest")[1]["step"] == 3


def test_a_newest_directory_that_does_not_load_is_skipped_for_an_older_one(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for step in (1, 2, 3):
        save_step(store, step)
    (store.pointer("latest") / "model.safetensors").write_bytes(b"")
    for name in ("latest", "backup"):
        store.pointer_path(name).unlink()
    checkpoint, problem = store.load_for_resume()
    assert checkpoint.meta["step"] == 2 and "step-000000002" in problem


def test_pointers_gone_and_no_directory_loads_refuses_a_fresh_start(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    directory = save_step(store, 1)
    (directory / "meta.json").write_text("{")
    store.pointer_path("latest").unlink()
    with pytest.raises(CheckpointError, match="refusing to start a new model"):
        store.load_for_resume()
    assert directory.exists()


def test_older_snapshots_are_bounded_and_partial_and_corrupt_ones_cleaned(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_snapshots=2)
    for name in (
        "step-000000000-aaaaaa.partial",
        "step-000000000-bbbbbb.corrupt",
        "step-000000001-cccccc.corrupt",
    ):
        (tmp_path / name).mkdir()
    saved = [save_step(store, step) for step in range(1, 7)]
    left = {p.name for p in tmp_path.glob("step-*")}
    # latest (6), backup (5), two older snapshots (4, 3), and the newest .corrupt for inspection
    assert left == {p.name for p in saved[2:]} | {"step-000000001-cccccc.corrupt"}


def test_best_never_gets_worse_across_a_rollback(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FlakySource(corpus_source(), RuntimeError("disk went away"), on_calls={19})
    trainer, store = started(make_settings, tmp_path, source=source, val_eval_every=5, train_lr=1e-2)
    saved_best: list[float] = []
    real_save = CheckpointStore.save

    def recording_save(self, weights, meta, optimizer, pointers=("latest",)):
        if "best" in pointers:
            saved_best.append(meta["state"]["val_loss"])
        return real_save(self, weights, meta, optimizer, pointers)

    monkeypatch.setattr(CheckpointStore, "save", recording_save)
    run_cycle_with_recovery(trainer, store, Recorder().hooks(), 20)
    # Steps 5, 10, 15 improved, step 19 failed and rolled back to latest (step 0), whose state knew no
    # best: the retry's evaluations at steps 5 and 10 are worse than step 15's and must not become best.
    assert len(saved_best) >= 3
    assert saved_best == sorted(saved_best, reverse=True)  # each best better than the one before
    assert trainer.state.best_val_loss == pytest.approx(saved_best[-1])


def test_a_rollback_keeps_the_best_validation_loss_seen(make_settings, tmp_path: Path) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=5)
    run_cycle(trainer, store, Hooks(), 10)
    best = trainer.state.best_val_loss
    trainer.state.best_val_loss, trainer.state.best_val_step = best - 0.5, 10  # a better one, not in latest
    roll_back(trainer, store, Hooks())
    assert trainer.state.best_val_loss == best - 0.5


def test_nan_recovery_restores_the_learning_rate_after_a_stable_stretch(
    make_settings, tmp_path: Path
) -> None:
    trainer, store = started(
        make_settings,
        tmp_path,
        source=None,
        val_eval_every=100,
        train_lr_recover_steps=4,
        train_warmup_steps=0,
    )
    recorder = Recorder()
    trainer.state.lr_scale, trainer.state.stable_steps = 0.25, 0  # as after two NaN retries
    run_cycle(trainer, store, recorder.hooks(), 4)
    assert trainer.state.lr_scale == 0.5
    run_cycle(trainer, store, recorder.hooks(), 4)
    assert trainer.state.lr_scale == 1.0 and trainer.current_lr() == trainer.settings.train_lr
    run_cycle(trainer, store, recorder.hooks(), 4)
    assert trainer.state.lr_scale == 1.0  # never above the schedule
    assert sum("raised back" in m for _, m in recorder.messages) == 2


def test_a_restart_with_another_batch_size_keeps_best_val_loss(make_settings, tmp_path: Path) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=5)
    run_cycle(trainer, store, Hooks(), 10)
    best, key = trainer.state.best_val_loss, trainer.val_key()
    settings = tiny_settings(make_settings, train_batch_size=2, val_eval_every=5)
    checkpoint, _ = store.load_for_resume()
    resumed = Trainer.create(settings, corpus_source(), setup_runtime(settings, "cpu"), checkpoint)
    assert resumed.batch_size == 2 and resumed.val_key() == key
    run_cycle(resumed, store, Hooks(), 5)
    assert resumed.state.best_val_loss <= best  # compared with, not reset
    assert resumed.state.val_key == key


def test_the_gradient_scaler_is_checkpointed(make_settings, tmp_path: Path) -> None:
    # A CPU stand-in for fp16 on a GPU: the same GradScaler, scaling fp32 losses.
    settings = tiny_settings(make_settings)
    runtime = setup_runtime(settings, "cpu")
    runtime.use_scaler = True
    trainer = Trainer.create(settings, corpus_source(), runtime, None)
    store = CheckpointStore(tmp_path)
    run_cycle(trainer, store, Hooks(), 3)
    state = trainer.scaler.state_dict()
    assert state["_growth_tracker"] == 3  # three finite steps counted towards the next growth
    checkpoint, _ = store.load_for_resume()
    assert checkpoint.meta["scaler"] == state
    resumed = Trainer.create(settings, corpus_source(), runtime, checkpoint)
    assert resumed.scaler.state_dict() == state
    assert Trainer.create(settings, corpus_source(), runtime, None).scaler.state_dict() != state
    assert save(resumed, store, ("latest",))
