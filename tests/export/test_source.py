"""What to export, and every way it can be wrong: a clear error before any work, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from aifactory.dataset import tokenizer as tokenizers
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.export import ExportError, ExportNotFound, tasks
from aifactory.export.source import resolve
from aifactory.export.staging import staged_directory, staged_file
from aifactory.model.llama import Transformer
from aifactory.train.checkpoint import CheckpointStore
from tests.export.models import save_checkpoint, tiny_config, training_texts


def test_default_is_the_best_checkpoint_with_the_tokenizer_it_was_trained_on(factory_settings: Any) -> None:
    source = resolve(factory_settings())
    assert source.origin.startswith("checkpoint best")
    assert source.tokenizer().generation == 1 and source.tokenizer().hash == source.meta["tokenizer_hash"]
    assert source.name == "aifactory-g1-step60"
    assert resolve(factory_settings(), checkpoint=str(source.weights_path.parent)).meta == source.meta


def test_unknown_checkpoint_names_the_choices(factory_settings: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportNotFound, match="use latest, best, backup or the path"):
        resolve(factory_settings(), checkpoint="newest")
    with pytest.raises(ExportNotFound, match="there is no backup checkpoint"):
        resolve(factory_settings(), checkpoint="backup")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="is not a checkpoint"):
        resolve(factory_settings(), checkpoint=str(tmp_path / "empty"))


def _other_data_dir(factory: tuple[Path, Tokenizer], tmp_path: Path) -> Path:
    """A copy of the factory's data directory that tests may change."""
    data_dir = tmp_path / "data"
    shutil.copytree(factory[0], data_dir)
    return data_dir


def test_checkpoint_of_another_tokenizer_generation_is_refused(
    factory: tuple[Path, Tokenizer], make_settings: Any, tmp_path: Path
) -> None:
    data_dir = _other_data_dir(factory, tmp_path)
    texts = training_texts()[::2]
    newer = tokenizers.train(data_dir, 2, texts, vocab_size=600, model_type="bpe", threads=1)
    settings = make_settings(data_dir=data_dir)
    with pytest.raises(ExportError, match=r"trained with tokenizer .* holds generation 2"):
        resolve(settings, tokenizer=newer.directory)
    # the right generation is found by the hash the checkpoint recorded, whatever is newest
    assert resolve(settings).tokenizer().generation == 1
    shutil.rmtree(data_dir / "tokenizer" / "g0001")
    with pytest.raises(ExportError, match=r"no tokenizer generation .* has the hash"):
        resolve(settings)


def test_a_model_trained_on_raw_bytes_has_no_tokenizer_to_export(make_settings: Any, tmp_path: Path) -> None:
    model = Transformer(tiny_config(256))
    save_checkpoint(CheckpointStore(tmp_path / "data" / "checkpoints"), model, "utf8-bytes", step=1)
    with pytest.raises(ExportError, match="trained on raw bytes"):
        resolve(make_settings(data_dir=tmp_path / "data"))


def test_corrupt_weights_are_an_error_and_leave_nothing(
    factory: tuple[Path, Tokenizer], make_settings: Any, tmp_path: Path
) -> None:
    data_dir = _other_data_dir(factory, tmp_path)
    settings = make_settings(data_dir=data_dir)
    source = resolve(settings)
    data = bytearray(source.weights_path.read_bytes())
    data[-1] ^= 0xFF
    source.weights_path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="truncated or corrupt"):
        tasks.hf(resolve(settings), out)
    assert list(tmp_path.iterdir()) == [data_dir]  # no output, no temporary directory


def test_an_existing_output_is_never_replaced(factory_settings: Any, tmp_path: Path) -> None:
    source = resolve(factory_settings())
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken.gguf").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        tasks.hf(source, tmp_path / "taken")
    with pytest.raises(ExportError, match="already exists"):
        tasks.gguf(source, tmp_path / "taken.gguf", "f16")
    assert (tmp_path / "taken.gguf").read_text() == "mine"


def test_staging_removes_a_failed_write_and_what_killed_exports_left(tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError), staged_file(out) as staging:
        staging.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".model.gguf.partial-999999999").write_bytes(b"left by a killed export")
    with staged_file(out) as staging:
        staging.write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]
    with pytest.raises(ValueError), staged_directory(tmp_path / "dir") as staging:
        (staging / "config.json").write_text("{}")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_provenance_travels_with_the_export(factory_settings: Any, tmp_path: Path) -> None:
    source = resolve(factory_settings())
    tasks.hf(source, tmp_path / "hf")
    provenance = json.loads((tmp_path / "hf" / "aifactory.json").read_text())
    assert provenance["step"] == 60 and provenance["tokenizer_generation"] == 1
    assert str(tmp_path) not in json.dumps(provenance) and provenance["checkpoint"].startswith("step-")
    assert provenance["dataset_version"] == "g1-v1" and provenance["model"]["n_kv_head"] == 2
