"""Saves checkpoints in a loop until killed (tests/train/test_checkpoint.py SIGKILLs it mid-write).

Every tensor of checkpoint N is filled with N and its meta says step N, so a reader can tell a
complete checkpoint from a mixed or torn one.

    python -m tests.train.checkpoint_writer ROOT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from aifactory.train.checkpoint import CheckpointStore


def main(root: Path) -> None:
    store = CheckpointStore(root)
    with store.lock():
        latest = store.read_meta("latest")
        step = latest[1]["step"] if latest else 0
        weights = {f"w{i}": torch.empty(256, 1024) for i in range(4)}  # 4 MB
        while True:
            step += 1
            for tensor in weights.values():  # refilled in place: nearly all the time goes to saving
                tensor.fill_(float(step))
            optimizer = {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": [{"params": [0]}]}
            store.save(weights, {"step": step, "state": {}}, optimizer)
            print(f"saved {step}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
