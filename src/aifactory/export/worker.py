"""One export job in its own process: read the request from the job's row, do it, write the outcome back.

Outputs of API jobs go to EXPORT_DIR/job-<id>/ (LM Studio's folder for `lmstudio`), never to a path
the request names: an API caller chooses what to export, not where on the server it is written. A stop
request (SIGTERM from the runner: cancel, or the server shutting down) is noticed at the next progress
report; the half-written output is removed on the way out.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aifactory.cluster.context import StopSignal
from aifactory.db import Database
from aifactory.export import ExportError, jobs, tasks
from aifactory.export.targets import check_path_part
from aifactory.settings import Settings, mask_secrets

log = logging.getLogger("aifactory")
REPORT_EVERY_SEC = 0.5


class Stopped(Exception):
    """The job was asked to stop (cancelled, or the server is shutting down)."""


def job_dir(settings: Settings, job_id: int) -> Path:
    return tasks.export_dir(settings) / f"job-{job_id}"


def perform(
    settings: Settings, job_id: int, target: str, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """Do what `request` (as the API validated it) asks for, into the job's own folder."""
    from aifactory.export.source import resolve

    folder = job_dir(settings, job_id)
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted earlier attempt left
    folder.mkdir(parents=True)
    kind = request.get("type") or settings.export_gguf_type
    if target == "lora":
        from aifactory.export.lora import LoraOptions, finetune

        options = LoraOptions.from_request(settings, request)
        return finetune(settings, options, folder / "lora", progress=progress)
    tokenizer = Path(request["tokenizer"]) if request.get("tokenizer") else None
    source = resolve(settings, checkpoint=request.get("checkpoint"), tokenizer=tokenizer)
    name = request.get("name") or source.name
    if target in ("hf", "gguf"):
        check_path_part(name, "the name")  # a file or folder inside the job's own folder, nothing else
    if target == "hf":
        return tasks.hf(source, folder / name, progress)
    if target == "gguf":
        return tasks.gguf(source, folder / f"{name}-{kind}.gguf", kind, progress)
    if target == "ollama":
        from aifactory.export.targets import ollama_file_stem

        return tasks.ollama(
            settings,
            source,
            name,
            folder / ollama_file_stem(name),
            kind,
            system=request.get("system") or "",
            create=request.get("create", True),
            progress=progress,
        )
    if target == "lmstudio":
        return tasks.lmstudio(
            settings,
            source,
            kind,
            publisher=request.get("publisher") or "aifactory",
            model=request.get("name"),
            progress=progress,
        )
    raise ExportError(f"unknown export target {target!r}")


def run_job(settings: Settings, job_id: int, stop: StopSignal) -> None:
    db = Database(settings.resolved_database_url(), pool_size=1, max_overflow=0)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        if stop.is_set():
            raise Stopped
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_SEC or fraction >= 1.0:
            last[0] = now
            jobs.report_progress(db, job_id, fraction, message)

    try:
        job = jobs.get(db, job_id)
        if job is None or job["status"] != "running":
            return
        try:
            result = perform(settings, job_id, job["target"], dict(job["request"]), progress)
        except Stopped:
            jobs.requeue_interrupted(db, job_id, "stopped")
        except ExportError as exc:
            jobs.fail(db, job_id, mask_secrets(str(exc), settings.secrets()))
        except Exception as exc:  # a bug or an unexpected library error: reported, never a silent end
            log.exception("export job %s failed", job_id)
            jobs.fail(db, job_id, mask_secrets(f"{type(exc).__name__}: {exc}", settings.secrets()))
        else:
            jobs.finish(db, job_id, result)
    finally:
        db.dispose()
