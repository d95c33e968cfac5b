"""Export jobs, the back end of the dashboard's Migration Ops panel.

    POST /api/exports                start an export (hf, gguf, ollama, lmstudio) or a LoRA fine-tune (admin)
    POST /api/exports/{id}/cancel    stop a queued or running job (admin)
    GET  /api/exports                the jobs, newest first
    GET  /api/exports/{id}           one job: status, progress (0..1), what it is doing, result or error
    GET  /api/exports/{id}/file      the finished file (a Hugging Face directory comes as a .tar)

A POST checks what can be checked at once (the checkpoint exists and matches its tokenizer generation,
the LoRA base is a supported family) and answers 4xx with the reason; the work itself runs in a process
of its own (export/jobs.py), never in the web process.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from aifactory.export import ExportError, ExportNotFound, jobs
from aifactory.web.auth import AdminOnly
from aifactory.web.context import Ctx

router = APIRouter(tags=["exports"])
admin_router = APIRouter(tags=["exports"], dependencies=[AdminOnly])

Target = Literal["hf", "gguf", "ollama", "lmstudio", "lora"]
GGUFType = Literal["f32", "f16", "q8_0"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,159}$"


class ExportRequest(BaseModel):
    target: Target = Field(description="hf, gguf, ollama, lmstudio, or lora (fine-tune an existing model).")
    checkpoint: str | None = Field(
        None,
        max_length=1000,
        description="latest, best, backup, production, vN, or a checkpoint directory on the server "
        "(default: best, or latest when there is no best). Not used by lora.",
    )
    type: GGUFType | None = Field(None, description="GGUF weight type (default EXPORT_GGUF_TYPE).")
    name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Ollama model name (ollama), model folder (lmstudio) or directory name (hf); "
        "default aifactory-g<generation>-step<step>.",
    )
    publisher: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="lmstudio")
    system: str | None = Field(
        None, max_length=20000, description="ollama: a SYSTEM prompt for the Modelfile"
    )
    create: bool = Field(
        True, description="ollama: run `ollama create` when ollama is installed on the server"
    )
    base: str | None = Field(
        None, max_length=1000, description="lora: directory of a Hugging Face model on the server"
    )
    steps: int | None = Field(
        None, ge=1, le=10_000_000, description="lora: optimizer steps (default LORA_STEPS)"
    )


class ExportJob(BaseModel):
    id: int
    target: str
    status: str = Field(description="queued, running, cancelling, done, failed or cancelled.")
    progress: float = Field(description="0..1")
    message: str = Field(description="What the job is doing now.")
    error: str
    request: dict[str, Any]
    result: dict[str, Any] | None = Field(description="The summary of a finished job.")
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    download: str | None = Field(description="Where the finished file downloads from.")


class ExportList(BaseModel):
    jobs: list[ExportJob] = Field(description="Newest first.")


def _job(row: dict[str, Any]) -> ExportJob:
    done = row["status"] == "done"
    return ExportJob(
        **{key: row[key] for key in ExportJob.model_fields if key in row and key != "download"},
        download=f"/api/exports/{row['id']}/file" if done else None,
    )


def _check(ctx: Any, body: ExportRequest) -> None:
    """The checks that need no torch: a bad request is a 4xx now, not a failed job later."""
    settings = ctx.settings
    try:
        if body.target == "lora":
            from aifactory.export.lora import check_base

            if not body.base:
                raise HTTPException(422, "a lora job needs `base`: the directory of a Hugging Face model")
            check_base(Path(body.base))
            return
        from aifactory.export.source import resolve

        resolve(settings, checkpoint=body.checkpoint)
        from aifactory.export.targets import check_ollama_name, check_path_part

        if body.target == "ollama" and body.name:
            check_ollama_name(body.name)
        elif body.name:
            check_path_part(body.name, "the name")
    except ExportError as exc:
        raise HTTPException(404 if isinstance(exc, ExportNotFound) else 400, str(exc)) from None


@admin_router.post("/api/exports", response_model=ExportJob, status_code=status.HTTP_202_ACCEPTED)
def start_export(body: ExportRequest, ctx: Ctx, request: Request) -> ExportJob:
    """Queue an export or a LoRA fine-tune; poll GET /api/exports/{id} for its progress."""
    _check(ctx, body)
    job_id = jobs.create(ctx.db, body.target, body.model_dump(exclude_none=True))
    runner = getattr(request.app.state, "export_runner", None)
    if runner is not None:
        runner.wake()
    row = jobs.get(ctx.db, job_id)
    assert row is not None
    return _job(row)


@admin_router.post("/api/exports/{job_id}/cancel", response_model=ExportJob)
def cancel_export(job_id: int, ctx: Ctx) -> ExportJob:
    """Stop a queued or running job; its half-written output is removed."""
    if jobs.get(ctx.db, job_id) is None:
        raise HTTPException(404, f"unknown export job {job_id}")
    if jobs.cancel(ctx.db, job_id) is None:
        raise HTTPException(409, f"export job {job_id} has already ended")
    row = jobs.get(ctx.db, job_id)
    assert row is not None
    return _job(row)


@router.get("/api/exports", response_model=ExportList)
def list_exports(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ExportList:
    """Export and fine-tune jobs, newest first."""
    return ExportList(jobs=[_job(row) for row in jobs.list_jobs(ctx.db, limit)])


@router.get("/api/exports/{job_id}", response_model=ExportJob)
def get_export(job_id: int, ctx: Ctx) -> ExportJob:
    """One job: status, progress, what it is doing, and its result or error."""
    row = jobs.get(ctx.db, job_id)
    if row is None:
        raise HTTPException(404, f"unknown export job {job_id}")
    return _job(row)


def _tar_stream(directory: Path) -> Iterator[bytes]:
    """An uncompressed tar of `directory`, made as it is sent (weights do not compress; nothing is
    written to disk or held in memory but one chunk)."""
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        info = tarfile.TarInfo(f"{directory.name}/{path.relative_to(directory)}")
        info.size, info.mtime, info.mode = path.stat().st_size, int(path.stat().st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk
        if info.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


@router.get("/api/exports/{job_id}/file", response_model=None)
def download_export(job_id: int, ctx: Ctx) -> FileResponse | StreamingResponse:
    """The finished job's file: a .gguf, or a .tar of a Hugging Face directory."""
    row = jobs.get(ctx.db, job_id)
    if row is None:
        raise HTTPException(404, f"unknown export job {job_id}")
    if row["status"] != "done":
        raise HTTPException(409, f"export job {job_id} is {row['status']}: there is no file yet")
    path = Path((row["result"] or {}).get("file", ""))
    if path.is_file():
        return FileResponse(path, filename=path.name, media_type="application/octet-stream")
    if path.is_dir():
        return StreamingResponse(
            _tar_stream(path),
            media_type="application/x-tar",
            headers={"Content-Disposition": f'attachment; filename="{path.name}.tar"'},
        )
    raise HTTPException(410, f"the output of export job {job_id} is gone from {path}")
