"""The background checkpoint writer, and the ranks agreeing on a dataset version before a cycle."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.cycle import Hooks, finish, run_cycle
from aifactory.train.engine import agree_on_version
from aifactory.train.runtime import Runtime
from aifactory.train.writer import CheckpointWriter, Snapshot
from tests.train.test_cycle import started
from tests.train.tiny import corpus_source, more_text


def test_a_snapshot_is_saved_as_it_was_when_taken(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    writer = CheckpointWriter(store)
    weights = {"w": torch.zeros(4)}
    optimizer = {"state": {0: {"exp_avg": torch.ones(4)}}, "param_groups": [{"params": [0]}]}
    writer.submit(Snapshot.take(weights, {"step": 1}, optimizer, ("latest",)))
    weights["w"].add_(5)  # training goes on and changes the tensors in place
    optimizer["state"][0]["exp_avg"].add_(5)
    writer.close()
    loaded = store.load("latest")
    assert torch.equal(loaded.weights["w"], torch.zeros(4))
    assert torch.equal(loaded.optimizer["state"][0]["exp_avg"], torch.ones(4))
    assert writer.failures() == []


def test_saves_are_written_in_order_and_a_newer_latest_replaces_a_waiting_one(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_snapshots=10)
    writer = CheckpointWriter(store)
    for step in range(1, 6):
        writer.submit(
            Snapshot.take({"w": torch.full((256, 256), float(step))}, {"step": step}, None, ("latest",))
        )
    writer.submit(Snapshot.take({"w": torch.zeros(1)}, {"step": 5}, None, ("best",)))
    writer.close()
    assert store.read_meta("latest")[1]["step"] == 5 and store.read_meta("best")[1]["step"] == 5
    steps = [int(p.name.split("-")[1]) for p in store.step_dirs()]
    assert steps == sorted(steps, reverse=True) and 5 in steps and len(steps) <= 6


def test_the_engine_trains_on_while_the_writer_saves_and_finishes_at_stop(
    make_settings, tmp_path: Path
) -> None:
    trainer, store = started(make_settings, tmp_path, val_eval_every=5)
    trainer.writer = CheckpointWriter(store)
    run_cycle(trainer, store, Hooks(), 10)
    run_cycle(trainer, store, Hooks(stop=lambda: trainer.state.step >= 13), 10)  # Stop after step 13
    finish(trainer, store, Hooks())  # every save on disk when it returns
    assert not trainer.writer.pending()
    assert store.read_meta("latest")[1]["step"] == 13
    assert store.read_meta("best")[1]["step"] == 10
    trainer.writer.close()


def agree(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        source = corpus_source()
        source.append(more_text(300, seed=5))
        if rank == 1:
            source.refresh()  # rank 1 opened the dataset after a build committed; rank 0 before
        runtime = Runtime(device=torch.device("cpu"), rank=rank, world_size=2)
        agree_on_version(runtime, source, lambda seconds: False)
        Path(path, f"rank{rank}").write_text(source.version)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ranks_agree_on_the_dataset_version_before_a_cycle(tmp_path: Path) -> None:
    mp.spawn(agree, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text()
