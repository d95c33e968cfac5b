"""Registered versions: immutable directories that serving and export resolve by name (production, vN)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aifactory.db.database import Database
from aifactory.export import ExportNotFound
from aifactory.export.source import resolve as export_source
from aifactory.registry import gate, pointer, versions
from aifactory.train.checkpoint import read_checkpoint
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save


def test_a_version_is_registered_once_and_export_and_serving_resolve_it(
    make_settings: Any, db: Database
) -> None:
    settings = factory_settings(make_settings, db, promotion_min_score=0.0)
    build_factory(settings, db)
    checkpoint = train_and_save(settings, db, 5)
    first = versions.register(settings, db, checkpoint)
    assert versions.register(settings, db, checkpoint)["version"] == first["version"] == 1  # same weights
    directory = pointer.version_dir(settings, 1)
    assert read_checkpoint(directory, optimizer=False).meta["registry"]["checkpoint"] == checkpoint.name
    assert sorted(p.name for p in directory.iterdir()) == [
        "MODEL_CARD.md", "eval.json", "meta.json", "model.safetensors", "model_card.json", "tokenizer",
    ]  # fmt: skip
    card = json.loads((directory / "model_card.json").read_text())
    assert card["data"]["version"] == checkpoint_meta(checkpoint)["dataset_version"]
    assert card["parameters"] > 0 and card["known_limits"] and card["scores"] is None

    with pytest.raises(ExportNotFound, match="no model has been promoted"):
        export_source(settings, checkpoint="production")
    gate.promote(settings, db, str(checkpoint))
    source = export_source(settings, checkpoint="production")
    assert source.origin.startswith("model version v1") and source.tokenizer_dir == directory / "tokenizer"
    assert export_source(settings, checkpoint="v1").weights_path == directory / "model.safetensors"
    with pytest.raises(ExportNotFound, match="no model version v9"):
        export_source(settings, checkpoint="v9")
    listing = versions.listing(db)
    assert listing["production"] == 1 and listing["versions"][0]["production"] is True
    assert listing["versions"][0]["score"] is not None  # evaluated by the gate after registering


def checkpoint_meta(directory: Any) -> dict[str, Any]:
    return json.loads((directory / "meta.json").read_text())
