"""The promotion gate: refuses below the threshold and a regression without touching production,
allows with force (recorded), rolls back, and of two promotions at once exactly one wins."""

from __future__ import annotations

import json
import shutil
import threading
from typing import Any

import pytest

from aifactory.db.database import Database
from aifactory.evaluate import store, suite
from aifactory.registry import PromotionRefused, gate, pointer, versions
from aifactory.serve import catalog
from aifactory.settings import Settings
from tests.evaluate.helpers import build_factory, factory_settings, train_and_save

GOOD_STEPS = 600


def gated(make_settings: Any, db: Database, **overrides: Any) -> Settings:
    settings = factory_settings(make_settings, db, **{"promotion_min_score": 0.15, **overrides})
    build_factory(settings, db)
    return settings


def production_dir(settings: Settings) -> str | None:
    try:
        return catalog.resolve(settings, "production").directory.name
    except catalog.ModelNotFound:
        return None


def test_the_gate_refuses_below_the_threshold_and_never_touches_production(
    make_settings: Any, db: Database
) -> None:
    settings = gated(make_settings, db)
    train_and_save(settings, db, 0)
    with pytest.raises(PromotionRefused) as refused:
        gate.promote(settings, db)
    assert "< PROMOTION_MIN_SCORE 0.15" in refused.value.rule
    assert refused.value.details["candidate_score"] < 0.15 and refused.value.details["promoted"] is False
    assert versions.state(db)["production"] is None and pointer.read(settings) is None
    assert production_dir(settings) is None
    # The candidate was evaluated (stored) and registered, with its model card; production is untouched.
    assert len(store.list_runs(db)) == 1
    [version] = versions.list_versions(db)
    directory = pointer.version_dir(settings, version["version"])
    card = json.loads((directory / "model_card.json").read_text())
    assert card["scores"]["score"] == refused.value.details["candidate_score"]
    assert (directory / "MODEL_CARD.md").read_text().startswith("# aifactory v1")
    assert (directory / "tokenizer" / "tokenizer.model").is_file()
    assert versions.history(db)[0]["action"] == "refused"

    # Force overrides and is recorded; serving now resolves production to the version.
    result = gate.promote(settings, db, force=True)
    assert result["promoted"] and result["forced"] and "forced below" in result["rule"]
    assert production_dir(settings) == "v1"
    assert versions.history(db)[0]["forced"] is True
    assert catalog.resolve(settings, "v1").directory == directory


def test_a_regression_is_refused_and_rollback_restores_the_previous_version(
    make_settings: Any, db: Database
) -> None:
    settings = gated(make_settings, db)
    train_and_save(settings, db, GOOD_STEPS)
    first = gate.promote(settings, db)
    assert first["promoted"] and first["version"] == 1 and first["candidate_score"] >= 0.15
    assert production_dir(settings) == "v1"

    # A worse best checkpoint (fewer steps) is refused, even above the threshold, and production stays.
    train_and_save(settings, db, 150, seed=1)
    low = settings.model_copy(update={"promotion_min_score": 0.0})
    with pytest.raises(PromotionRefused) as refused:
        gate.promote(low, db)
    assert "worse than production v1" in refused.value.rule
    assert refused.value.details["production_score"] == pytest.approx(first["candidate_score"])
    assert production_dir(settings) == "v1" and versions.state(db)["production"] == 1

    forced = gate.promote(low, db, force=True)
    assert forced["version"] == 2 and production_dir(settings) == "v2"
    back = gate.rollback(settings, db)
    assert back == {"version": 1, "previous": None, "rolled_back_from": 2}
    assert production_dir(settings) == "v1"  # serving resolves production per request: it follows
    with pytest.raises(PromotionRefused, match="no previous"):
        gate.rollback(settings, db)


def test_of_two_promotions_at_once_exactly_one_wins(make_settings: Any, db: Database) -> None:
    settings = gated(make_settings, db)
    train_and_save(settings, db, GOOD_STEPS)
    gate.scored(settings, db, gate.resolve(settings, "best"))  # both find the score: they race on the move
    results: list[Any] = []
    start = threading.Barrier(2)

    def promote() -> None:
        start.wait()
        try:
            results.append(gate.promote(settings, db))
        except PromotionRefused as exc:
            results.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, PromotionRefused)]
    assert len(won) == 1 and len(lost) == 1, results
    assert "meanwhile" in lost[0].rule or "already production" in lost[0].rule
    assert [h["action"] for h in versions.history(db)].count("promote") == 1
    assert versions.state(db) == {"production": 1, "previous": None, "revision": 1}


def test_retention_keeps_production_its_rollback_target_and_the_last_versions(
    make_settings: Any, db: Database
) -> None:
    settings = gated(make_settings, db, model_keep_versions=1, promotion_min_score=0.0)
    for steps in (1, 2, 3, 4):
        train_and_save(settings, db, steps, seed=steps)
        gate.promote(settings, db, force=True)
    kept = {v["version"] for v in versions.list_versions(db) if v["deleted_at"] is None}
    assert kept == {4, 3}  # production v4, its rollback target v3 (and v4 is the last one)
    assert not pointer.version_dir(settings, 1).exists() and pointer.version_dir(settings, 3).is_dir()
    with pytest.raises(catalog.ModelNotFound):
        catalog.resolve(settings, "v1")


def test_a_promotion_without_enough_free_disk_is_refused(make_settings: Any, db: Database) -> None:
    settings = gated(make_settings, db, model_min_free_gb=1e9)
    train_and_save(settings, db, 0)
    with pytest.raises(PromotionRefused, match="not enough free disk"):
        gate.promote(settings, db, force=True)
    assert versions.state(db)["production"] is None and versions.list_versions(db) == []
    assert not any(pointer.models_root(settings).glob("v*"))


def test_the_candidate_survives_the_trainer_deleting_its_checkpoint_mid_evaluation(
    make_settings: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer keeps a few snapshots only: the gate holds its candidate's files while it works."""
    settings = gated(make_settings, db, promotion_min_score=0.0)
    original = train_and_save(settings, db, 1)
    real_evaluate = suite.evaluate

    def evaluate_while_the_trainer_cleans_up(*args: Any, **kwargs: Any) -> Any:
        shutil.rmtree(original)  # what the snapshot bound does to an old step directory
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(suite, "evaluate", evaluate_while_the_trainer_cleans_up)
    result = gate.promote(settings, db)
    assert result["promoted"] and production_dir(settings) == "v1"
    assert versions.get(db, 1)["checkpoint"] == original.name  # provenance names the checkpoint
    assert not list(pointer.models_root(settings).glob(".hold-*"))  # the hold is gone
