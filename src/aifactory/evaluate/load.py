"""Loading the model an evaluation reads (see target.py for which one)."""

from __future__ import annotations

import torch

from aifactory.evaluate import EvalError
from aifactory.evaluate.target import Target
from aifactory.model.config import ModelConfig
from aifactory.model.llama import Transformer
from aifactory.train.checkpoint import CheckpointError, read_checkpoint


def load_model(target: Target, device: torch.device) -> Transformer:
    try:
        checkpoint = read_checkpoint(target.directory, map_location="cpu", optimizer=False)
    except (CheckpointError, FileNotFoundError) as exc:
        raise EvalError(f"cannot load {target.directory}: {exc}") from None
    model = Transformer(ModelConfig.from_dict(checkpoint.meta["model"]))
    model.load_state_dict(checkpoint.weights, strict=True)
    return model.to(device).eval()
