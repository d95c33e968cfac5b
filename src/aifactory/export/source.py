"""What to export: one function turns "this checkpoint" into weights, model config, tokenizer and meta.

`resolve(settings, checkpoint=...)` does every check that can fail before any work starts (the
checkpoint exists and is complete, its tokenizer generation is on disk and is the one it was trained
with, the vocabulary sizes agree) and reads only JSON, so the web process can answer a bad request with
a 4xx at once, without torch. `load_weights(source)` then reads the weights (in the export's own
process), verifying their size and sha256 against the checkpoint's meta.json.

A checkpoint is named the way CheckpointStore names them: `latest`, `best` or `backup` under
DATA_DIR/checkpoints, or a path (a checkpoint directory with meta.json, or a checkpoint folder with
latest.json). Model versions of the registry plug in here, as a second branch of `resolve` that fills
the same ExportSource from a version directory; everything downstream only sees an ExportSource.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory.dataset import tokenizer as tokenizers
from aifactory.export import ExportError, ExportNotFound
from aifactory.model.config import ModelConfig, ModelConfigError
from aifactory.settings import Settings

if TYPE_CHECKING:
    import torch

CHECKPOINT_NAMES = ("latest", "best", "backup")
WEIGHTS, META = "model.safetensors", "meta.json"  # as in train/checkpoint.py
BYTE_TOKENIZER = "utf8-bytes"  # the tokenizer hash of `aifactory train --text-file` checkpoints


@dataclass(frozen=True)
class ExportSource:
    """A model ready to export: where its weights are, its shape, its tokenizer and its provenance."""

    name: str  # a default model name: aifactory-g<generation>-step<step>
    origin: str  # one line for people: which checkpoint or version this is
    weights_path: Path  # safetensors, in our parameter names (model/llama.py)
    weights_file: dict[str, Any]  # {"bytes": n, "sha256": hex} to verify it, or {} if unknown
    config: ModelConfig
    tokenizer_dir: Path  # a tokenizer generation directory (tokenizer.model + tokenizer.json)
    meta: dict[str, Any] = field(default_factory=dict)  # the checkpoint's meta.json

    def tokenizer(self) -> tokenizers.Tokenizer:
        return tokenizers.Tokenizer(self.tokenizer_dir)

    def describe(self) -> str:
        """Where the model came from, without local paths: this travels inside the exported files."""
        dataset = self.meta.get("dataset_version") or "unknown"
        step = int(self.meta.get("step", 0))
        return f"step {step:,}, tokenizer generation {self.tokenizer().generation}, dataset {dataset}"

    def provenance(self) -> dict[str, Any]:
        """What an exported model says about where it came from (no sampler state, file lists or paths)."""
        state = self.meta.get("state", {})
        return {
            "trained": self.describe(),
            "checkpoint": self.weights_path.parent.name,
            "step": self.meta.get("step"),
            "tokens_seen": state.get("tokens_seen"),
            "val_loss": state.get("val_loss"),
            "val_bpb": state.get("val_bpb"),
            "tokenizer_hash": self.meta.get("tokenizer_hash"),
            "tokenizer_generation": self.tokenizer().generation,
            "dataset_version": self.meta.get("dataset_version"),
            "aifactory_version": self.meta.get("aifactory_version"),
            "model": self.config.to_dict(),
        }


def checkpoint_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints"


def _pointer(root: Path, name: str) -> Path | None:
    """The directory a CheckpointStore pointer names (read as train/checkpoint.py writes it, without
    importing torch)."""
    path = root / f"{name}.json"
    try:
        return root / json.loads(path.read_text())["dir"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{path} is unreadable ({exc}); it should name a checkpoint directory") from None


def checkpoint_directory(settings: Settings, checkpoint: str | None) -> tuple[Path, str]:
    """(checkpoint directory, how it was named) for `checkpoint`; None = best, or latest if no best."""
    root = checkpoint_root(settings)
    if checkpoint is None:
        checkpoint = "best" if _pointer(root, "best") is not None else "latest"
    if checkpoint == "production" or (checkpoint.startswith("v") and checkpoint[1:].isdigit()):
        from aifactory.serve.catalog import registry_entry

        entry = registry_entry(settings, checkpoint)
        if entry is None:
            raise ExportNotFound(
                "no model has been promoted to production yet"
                if checkpoint == "production"
                else f"there is no model version {checkpoint} (`aifactory models` lists them)"
            )
        return entry.directory, f"model version {entry.directory.name} ({checkpoint})"
    if checkpoint in CHECKPOINT_NAMES:
        directory = _pointer(root, checkpoint)
        if directory is None:
            raise ExportNotFound(
                f"there is no {checkpoint} checkpoint in {root}: train a model first "
                "(`aifactory train` or the factory), or pass a checkpoint path"
            )
        return directory, f"checkpoint {checkpoint} ({directory})"
    path = Path(checkpoint).expanduser()
    if (path / META).is_file():
        return path, f"checkpoint {path}"
    if (path / "latest.json").is_file():
        directory = _pointer(path, "latest")
        assert directory is not None
        return directory, f"checkpoint latest of {path} ({directory})"
    if not path.exists():
        raise ExportNotFound(
            f"unknown checkpoint {checkpoint!r}: use {', '.join(CHECKPOINT_NAMES)} or the path of a "
            "checkpoint directory"
        )
    raise ExportError(f"{path} is not a checkpoint: it has no {META} (and no latest.json)")


def find_tokenizer(settings: Settings, tokenizer_hash: str) -> Path:
    """The tokenizer generation under DATA_DIR/tokenizer whose tokenizer.model has this hash."""
    for generation in reversed(tokenizers.generations(Path(settings.data_dir))):
        directory = tokenizers.generation_dir(Path(settings.data_dir), generation)
        try:
            info = json.loads((directory / "tokenizer.json").read_text())
        except (OSError, ValueError):
            continue
        if info.get("tokenizer_hash") == tokenizer_hash:
            return directory
    raise ExportError(
        f"no tokenizer generation in {tokenizers.tokenizer_root(Path(settings.data_dir))} has the hash "
        f"{tokenizer_hash[:16]}... the model was trained with: pass its directory with --tokenizer"
    )


def resolve(
    settings: Settings, *, checkpoint: str | None = None, tokenizer: Path | None = None
) -> ExportSource:
    """What to export, checked: everything but reading the weights. Raises ExportError."""
    # A model version (production, vN) is a directory like a checkpoint's, with its tokenizer inside.
    directory, origin = checkpoint_directory(settings, checkpoint)
    try:
        meta = json.loads((directory / META).read_text())
        config = ModelConfig.from_dict(meta["model"])
    except FileNotFoundError:
        raise ExportError(f"{directory / META} is missing: the checkpoint is incomplete") from None
    except (ValueError, KeyError, TypeError, ModelConfigError) as exc:
        raise ExportError(f"{directory / META} cannot be read ({exc}): the checkpoint is corrupt") from None
    if not (directory / WEIGHTS).is_file():
        raise ExportError(f"{directory / WEIGHTS} is missing: the checkpoint is incomplete")
    trained_with = str(meta.get("tokenizer_hash") or "")
    if trained_with == BYTE_TOKENIZER:
        raise ExportError(
            f"{directory} was trained on raw bytes (`aifactory train --text-file`): it has no tokenizer "
            "that other tools could use; export a model trained on the token dataset"
        )
    if tokenizer is None and (directory / "tokenizer" / "tokenizer.json").is_file():
        tokenizer_dir = directory / "tokenizer"  # a model version carries its own
    elif tokenizer is None:
        tokenizer_dir = find_tokenizer(settings, trained_with)
    else:
        tokenizer_dir = Path(tokenizer).expanduser()
    try:
        loaded = tokenizers.Tokenizer(tokenizer_dir)
    except tokenizers.TokenizerError as exc:
        raise ExportError(str(exc)) from None
    if loaded.hash != trained_with:
        raise ExportError(
            f"{directory} was trained with tokenizer {trained_with[:16]}... but {tokenizer_dir} holds "
            f"generation {loaded.generation} ({loaded.hash[:16]}...): export it with the tokenizer "
            "generation it was trained on"
        )
    if loaded.vocab_size != config.vocab_size:
        raise ExportError(
            f"{directory} has a vocabulary of {config.vocab_size} but its tokenizer has {loaded.vocab_size}"
        )
    return ExportSource(
        name=f"aifactory-g{loaded.generation}-step{int(meta.get('step', 0))}",
        origin=origin,
        weights_path=directory / WEIGHTS,
        weights_file=dict(meta.get("files", {}).get(WEIGHTS, {})),
        config=config,
        tokenizer_dir=tokenizer_dir,
        meta=meta,
    )


def load_weights(source: ExportSource) -> dict[str, torch.Tensor]:
    """The weights (our names), verified against the size and sha256 the checkpoint recorded."""
    import safetensors.torch

    try:
        data = source.weights_path.read_bytes()
    except OSError as exc:
        raise ExportError(f"cannot read {source.weights_path}: {exc}") from None
    expected = source.weights_file
    if expected and (
        len(data) != expected.get("bytes") or hashlib.sha256(data).hexdigest() != expected.get("sha256")
    ):
        raise ExportError(f"{source.weights_path} is truncated or corrupt: it does not match {META}")
    try:
        weights = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ExportError(f"{source.weights_path} cannot be read: {exc}") from None
    return {name: tensor.float() for name, tensor in weights.items()}
