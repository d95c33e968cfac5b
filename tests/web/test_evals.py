"""The evaluation and registry routes on a real server: an evaluation in its own process, its progress,
history and growth samples; promotion refused with 409 and the rule, forced, listed; rollback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aifactory.db import Database
from tests.conftest import wait_for
from tests.dataset.helpers import SMALL
from tests.evaluate.helpers import EVAL, build_factory, factory_settings, train_and_save
from tests.train.tiny import TINY
from tests.web.conftest import serve  # noqa: F401  (the fixture: the app on a real uvicorn server)

TOKEN = "eval-admin-token"


@pytest.fixture
def client(serve: Any, make_settings: Any, db: Database) -> httpx.Client:  # noqa: F811
    settings = factory_settings(make_settings, db)
    build_factory(settings, db)
    train_and_save(settings, db, 300)
    overrides = {**SMALL, **TINY, **EVAL, "train_lr": 1e-2, "promotion_min_score": 0.99}
    client, _ = serve(admin_api_token=TOKEN, **overrides)
    client.timeout = httpx.Timeout(180)
    return client


def test_an_evaluation_runs_in_its_own_process_and_shows_in_the_history(client: httpx.Client) -> None:
    assert client.post("/api/evals/run", json={"model": "best"}).status_code in (401, 403)
    admin = {"x-admin-token": TOKEN}
    bad = client.post("/api/evals/run", json={"model": "v7"}, headers=admin)
    assert bad.status_code == 400 and "no model version v7" in bad.json()["detail"]
    assert client.get("/api/evals/status").json() == {"job": None}
    started = client.post("/api/evals/run", json={"model": "best"}, headers=admin)
    assert started.status_code == 202, started.text

    def finished() -> dict[str, Any] | None:
        job = client.get("/api/evals/status").json()["job"]
        return job if job["status"] != "running" else None

    job = wait_for(finished, timeout=180, what="the evaluation job to end")
    assert job["status"] == "done" and job["progress"] == 1.0, job  # type: ignore[index]
    [run] = client.get("/api/evals").json()["runs"]
    assert run["id"] == job["run_id"] and run["step"] == 300  # type: ignore[index]
    assert {(p["part"], p["language"]) for p in run["parts"]} >= {("mc", ""), ("mc", "en"), ("mc", "ja")}
    growth = client.get("/api/evals/growth").json()["prompts"]
    assert {p["language"] for p in growth} == {"en", "ja"} and all(len(p["samples"]) == 1 for p in growth)


def test_a_refused_promotion_is_409_with_the_rule_and_force_promotes(client: httpx.Client) -> None:
    admin = {"x-admin-token": TOKEN}
    assert client.post("/api/models/promote").status_code in (401, 403)
    refused = client.post("/api/models/promote", headers=admin)
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "< PROMOTION_MIN_SCORE 0.99" in detail["rule"] and detail["promoted"] is False
    assert 0 <= detail["candidate_score"] < 0.99 and detail["min_score"] == 0.99
    listed = client.get("/api/models").json()
    assert listed["production"] is None and [v["name"] for v in listed["versions"]] == ["v1"]

    forced = client.post("/api/models/promote?force=true", headers=admin)
    assert forced.status_code == 200, forced.text
    assert forced.json()["promoted"] and forced.json()["forced"] and forced.json()["version"] == 1
    listed = client.get("/api/models").json()
    assert listed["production"] == 1 and listed["versions"][0]["production"] is True
    assert listed["versions"][0]["card"]["scores"]["score"] == detail["candidate_score"]
    again = client.post("/api/models/promote?force=true", headers=admin)
    assert again.status_code == 409 and "already production" in again.json()["detail"]["rule"]
    rollback = client.post("/api/models/rollback", headers=admin)
    assert rollback.status_code == 409 and "no previous" in rollback.json()["detail"]["rule"]


def test_the_web_process_never_imports_torch_for_these_routes() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aifactory.web.app, aifactory.web.routes.evals, aifactory.web.routes.models; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
