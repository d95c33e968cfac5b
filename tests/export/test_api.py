"""Export jobs through the API: a real server, each job in its own process, progress, download, errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifactory.db import Database
from aifactory.export import jobs
from tests.conftest import wait_for
from tests.web.conftest import serve  # noqa: F401  (the fixture: the app on a real uvicorn server)

TOKEN = "export-admin-token"


@pytest.fixture
def client(serve: Any, factory: tuple[Path, Any], tmp_path: Path) -> httpx.Client:  # noqa: F811
    client, _ = serve(
        data_dir=factory[0],
        export_dir=str(tmp_path / "exports"),
        lmstudio_models_dir=str(tmp_path / "lmstudio"),
        ollama_bin="ollama-not-installed",
        admin_api_token=TOKEN,
    )
    client.headers["x-admin-token"] = TOKEN
    return client


def finished(client: httpx.Client, job_id: int, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = client.get(f"/api/exports/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled") else None

    return wait_for(done, timeout=timeout, what=f"export job {job_id} to end")  # type: ignore[return-value]


def test_gguf_and_hf_jobs_run_in_their_own_process_and_download(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/api/exports", json={"target": "gguf", "type": "q8_0"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running") and job["download"] is None
    hf = client.post("/api/exports", json={"target": "hf", "checkpoint": "latest", "name": "mine"}).json()

    job = finished(client, job["id"])
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 1.0 and job["result"]["type"] == "q8_0" and job["attempts"] == 1
    file = client.get(job["download"])
    assert file.status_code == 200 and file.content[:4] == b"GGUF"
    assert file.content == Path(job["result"]["file"]).read_bytes()
    assert Path(job["result"]["file"]).is_relative_to(tmp_path / "exports" / f"job-{job['id']}")

    hf = finished(client, hf["id"])
    assert hf["status"] == "done", hf["error"]
    archive = client.get(hf["download"])
    assert archive.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = set(tar.getnames())
        config = json.loads(tar.extractfile("mine/config.json").read())  # type: ignore[union-attr]
    assert {"mine/model.safetensors", "mine/tokenizer.json", "mine/chat_template.jinja"} <= names
    assert config["architectures"] == ["LlamaForCausalLM"]
    listed = client.get("/api/exports").json()["jobs"]
    assert [row["id"] for row in listed] == [hf["id"], job["id"]]


def test_bad_requests_are_refused_at_once_with_the_reason(client: httpx.Client, tmp_path: Path) -> None:
    missing = client.post("/api/exports", json={"target": "gguf", "checkpoint": "nope"})
    assert missing.status_code == 404 and "use latest, best, backup" in missing.json()["detail"]
    assert client.post("/api/exports", json={"target": "zip"}).status_code == 422
    assert client.post("/api/exports", json={"target": "gguf", "type": "q4"}).status_code == 422
    assert client.post("/api/exports", json={"target": "lora"}).status_code == 422
    base = tmp_path / "bert"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "bert"}))
    family = client.post("/api/exports", json={"target": "lora", "base": str(base)})
    assert family.status_code == 400 and "supported families: llama, qwen2" in family.json()["detail"]
    hub = client.post("/api/exports", json={"target": "lora", "base": "Qwen/Qwen2.5-0.5B"})
    assert hub.status_code == 404 and "download the model first" in hub.json()["detail"]
    name = client.post("/api/exports", json={"target": "ollama", "name": "a:b:c"})
    assert name.status_code == 400 and "not a valid Ollama model name" in name.json()["detail"]
    escape = client.post("/api/exports", json={"target": "hf", "name": "a/../../../elsewhere"})
    assert escape.status_code == 400 and "must be letters" in escape.json()["detail"]
    assert client.get("/api/exports/999").status_code == 404
    assert client.get("/api/exports").json()["jobs"] == []  # nothing was queued


def test_starting_and_cancelling_need_the_admin_token(client: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=client.base_url)
    assert anonymous.post("/api/exports", json={"target": "gguf"}).status_code == 401
    assert anonymous.post("/api/exports/1/cancel").status_code == 401


def test_a_queued_job_can_be_cancelled_and_has_no_file(client: httpx.Client, db: Database) -> None:
    job_id = jobs.create(db, "gguf", {"target": "gguf"})  # queued behind nothing: cancel before it starts
    response = client.post(f"/api/exports/{job_id}/cancel")
    if response.json()["status"] == "cancelling":  # the runner picked it up first: it stops it
        finished(client, job_id)
    job = client.get(f"/api/exports/{job_id}").json()
    assert job["status"] == "cancelled"
    assert client.get(f"/api/exports/{job_id}/file").status_code == 409
    assert client.post(f"/api/exports/{job_id}/cancel").status_code == 409


def test_jobs_interrupted_by_a_restart_run_again_then_give_up(db: Database) -> None:
    job_id = jobs.create(db, "gguf", {"target": "gguf"})
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        claimed = jobs.claim_next(db, "node-a")
        assert claimed is not None and claimed["id"] == job_id and claimed["attempts"] == attempt
        assert jobs.recover(db, "node-b") == 0  # another node's jobs are not this one's to recover
        assert jobs.recover(db, "node-a") == 1
    job = jobs.get(db, job_id)
    assert job is not None and job["status"] == "failed" and "given up after 3 attempts" in job["error"]


def test_a_lora_job_reports_its_steps_and_can_be_stopped_midway(
    client: httpx.Client, db: Database, factory: tuple[Path, Any], tmp_path: Path
) -> None:
    """A fine-tune through the API: its progress is the training's, and a cancel removes its output."""
    from tests.dataset.helpers import add_texts
    from tests.export.models import llama_base, training_texts

    add_texts(db, [text for _, text in training_texts()[:30]], "en")
    base = llama_base(tmp_path / "base", factory[1])
    job = client.post("/api/exports", json={"target": "lora", "base": str(base), "steps": 100000})
    assert job.status_code == 202, job.text

    def training() -> dict[str, Any] | None:
        row = client.get(f"/api/exports/{job.json()['id']}").json()
        assert row["status"] in ("queued", "running"), row
        return row if row["message"].startswith("step ") else None

    row = wait_for(training, timeout=120, what="the LoRA job to report training steps")
    assert "/100000 loss" in row["message"] and 0.1 <= row["progress"] < 0.8
    assert client.post(f"/api/exports/{row['id']}/cancel").json()["status"] == "cancelling"
    done = finished(client, row["id"], timeout=90)
    assert done["status"] == "cancelled"
    folder = tmp_path / "exports" / f"job-{row['id']}"
    assert not (folder / "lora").exists() and not list(folder.glob(".lora.partial*"))
