"""The evaluation: an untrained model scores about 0, a briefly trained one clearly more; results are
stored whole or not at all; growth samples accumulate; the task is frozen."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from aifactory.cli import main
from aifactory.dataset.source import open_source
from aifactory.db.database import Database
from aifactory.evaluate import EvalError, EvalInterrupted, store, suite, task
from aifactory.evaluate.commands import run_and_store
from aifactory.evaluate.target import resolve
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.engine import checkpoint_dir
from aifactory.train.runtime import setup_runtime
from aifactory.train.trainer import Trainer
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save
from tests.train.tiny import corpus_source

TRAINED_STEPS = 600  # about 3 s of training of the tiny model on one core


def test_an_untrained_model_scores_about_zero_and_a_briefly_trained_one_clearly_higher(
    make_settings: Any, db: Database
) -> None:
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    train_and_save(settings, db, 0)
    untrained = run_and_store(settings, db, "latest")
    train_and_save(settings, db, TRAINED_STEPS)
    trained = run_and_store(settings, db, "latest")

    assert untrained["mc"]["chance"] == 0.25 and set(untrained["mc"]["languages"]) == {"en", "ja"}
    assert untrained["score"] < 0.2, untrained["mc"]
    assert trained["score"] > untrained["score"] + 0.15 and trained["score"] > 0.2, trained["mc"]
    assert trained["bpb"]["overall"] < untrained["bpb"]["overall"]
    assert set(trained["bpb"]["languages"]) == {"en", "ja"}
    assert trained["task_version"] == untrained["task_version"]  # the same frozen task
    # The score is the chance-adjusted accuracy, clipped to [0, 1].
    assert trained["score"] == pytest.approx((trained["mc"]["accuracy"] - 0.25) / 0.75)

    # Stored with every part; growth samples accumulate, one per prompt and evaluation.
    runs = store.list_runs(db)
    assert [run["step"] for run in runs] == [TRAINED_STEPS, 0]
    assert {(p["part"], p["language"]) for p in runs[0]["parts"]} >= {("mc", "en"), ("mc", "ja"), ("bpb", "")}
    assert len(runs[0]["prompts"]) == 8 and all(0 <= p["score"] <= 1 for p in runs[0]["prompts"])
    growth = store.growth(db)
    assert {entry["language"] for entry in growth} == {"en", "ja"}
    assert all([s["step"] for s in entry["samples"]] == [0, TRAINED_STEPS] for entry in growth)


def test_the_task_is_frozen_and_its_distractors_come_from_other_documents(
    make_settings: Any, db: Database
) -> None:
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    source = open_source(settings, db)
    try:
        documents, version = source.validation_documents(), source.val_version
    finally:
        source.close()
    first, again = task.build(documents, version, 48), task.build(documents, version, 48)
    assert first.version == again.version == f"mc{task.TASK_FORMAT}-{version}"
    assert np.array_equal(first.choices, again.choices) and np.array_equal(first.answers, again.answers)
    assert len(first) > 40
    for item in range(len(first)):
        true = first.choices[item, first.answers[item]]
        others = [c for k, c in enumerate(first.choices[item]) if k != first.answers[item]]
        assert all(not np.array_equal(true, other) for other in others)
    assert len(set(first.answers.tolist())) > 1  # the true answer is not always in the same place


def test_an_interrupted_evaluation_stores_nothing(make_settings: Any, db: Database) -> None:
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    train_and_save(settings, db, 0)
    with pytest.raises(EvalInterrupted):
        suite.evaluate(settings, db, resolve(settings, "latest"), stop=lambda: True)
    with pytest.raises(EvalInterrupted, match="budget"):
        suite.evaluate(settings, db, resolve(settings, "latest"), budget_sec=0.0)
    assert store.list_runs(db) == [] and store.growth(db) == []


def test_aifactory_eval_prints_the_score_and_its_parts(
    make_settings: Any, db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = factory_settings(make_settings, db)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DATABASE_URL", db.url)
    assert main(["eval"]) == 1
    assert "no checkpoint to evaluate" in capsys.readouterr().err
    build_factory(settings, db)
    train_and_save(settings, db, 50)
    small = {"TRAIN_SEQ_LEN": "32", "EVAL_MC_ITEMS": "16", "EVAL_MAX_TOKENS": "4", "EVAL_GROWTH_TOKENS": "4"}
    for name, value in {
        **small,
        "VAL_EVAL_BATCHES": "1",
        "AUTO_TUNE": "0",
        "TRAIN_LANG_ONLY": "en,ja",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["eval", "--checkpoint", "best"]) == 0
    out = capsys.readouterr().out
    assert "score " in out and "multiple choice: accuracy" in out and "bits per byte" in out
    assert "growth samples:" in out and "stored as evaluation run" in out
    assert main(["eval", "--checkpoint", "latest", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["score"] <= 1 and report["step"] == 50 and report["run_id"] is not None
    assert main(["eval", "--checkpoint", "/nonexistent/dir"]) == 1
    assert "not a checkpoint" in capsys.readouterr().err


def test_no_checkpoint_or_no_validation_data_is_a_clear_error(make_settings: Any, db: Database) -> None:
    settings = factory_settings(make_settings, db)
    with pytest.raises(EvalError, match="no checkpoint"):
        resolve(settings, "best")
    # A model trained on raw bytes (`aifactory train --text-file`) has no validation documents.
    source = corpus_source(2000)
    trainer = Trainer.create(settings, source, setup_runtime(settings, "cpu"), None)
    weights, meta, _ = trainer.checkpoint_payload()
    CheckpointStore(checkpoint_dir(settings)).save(weights, meta, None, pointers=("latest",))
    with pytest.raises(EvalError, match="no validation documents"):
        suite.evaluate(settings, db, resolve(settings, "latest"))
