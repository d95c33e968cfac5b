"""`aifactory models`, `models register`, `promote [--force]` and `rollback` from the command line."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from aifactory.cli import main
from aifactory.db.database import Database
from aifactory.registry import pointer, versions
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save

ENV = {
    "TRAIN_SEQ_LEN": "32", "EVAL_MC_ITEMS": "16", "EVAL_MAX_TOKENS": "4", "EVAL_GROWTH_TOKENS": "4",
    "VAL_EVAL_BATCHES": "1", "AUTO_TUNE": "0", "TRAIN_LANG_ONLY": "en,ja", "PROMOTION_MIN_SCORE": "0.99",
}  # fmt: skip


def test_promote_refuses_then_force_promotes_and_models_lists_it(
    make_settings: Any, db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = factory_settings(make_settings, db)
    for name, value in {**ENV, "DATA_DIR": str(settings.data_dir), "DATABASE_URL": db.url}.items():
        monkeypatch.setenv(name, value)
    assert main(["promote"]) == 1
    assert "no checkpoint to evaluate" in capsys.readouterr().err
    build_factory(settings, db)
    checkpoint = train_and_save(settings, db, 20)
    assert main(["models"]) == 0 and "no model version registered yet" in capsys.readouterr().out
    assert main(["promote"]) == 1
    err = capsys.readouterr().err
    assert "promotion refused: score" in err and "< PROMOTION_MIN_SCORE 0.99" in err
    assert versions.state(db)["production"] is None
    assert main(["promote", "--force"]) == 0 and "v1 is production" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "* " in out and "v1" in out and checkpoint.name in out and "production: v1" in out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["production"] == 1
    assert main(["rollback"]) == 1 and "no previous" in capsys.readouterr().err
    again = train_and_save(settings, db, 25, seed=2)
    assert main(["models", "register", "--checkpoint", str(again), "--no-evaluate"]) == 0
    assert "as v2" in capsys.readouterr().out and pointer.version_dir(settings, 2).is_dir()


def test_an_interrupted_registration_leaves_no_version_and_is_cleaned_up(
    make_settings: Any, db: Database
) -> None:
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    checkpoint = train_and_save(settings, db, 1)
    root = pointer.models_root(settings)
    # What a registration killed half-way leaves: a partial directory of a process that is gone.
    dead = root / f".v1.partial-{2**22 + os.getpid()}-0abc"
    (dead / "tokenizer").mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half")
    assert versions.list_versions(db) == [] and pointer.version_dir(settings, 1).exists() is False
    assert versions.register(settings, db, checkpoint)["version"] == 1
    assert not dead.exists() and sorted(p.name for p in root.iterdir()) == ["v1"]
