"""Each export target as one function: the command line and the job process both call these.

Every function takes the resolved ExportSource (export/source.py), an output location and a progress
callback `progress(fraction, message)`, and returns a JSON-able summary whose "file" is what a download
of the result gives (a file, or a directory for Hugging Face).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory.export import ExportError, targets
from aifactory.export.staging import check_free, staged_directory
from aifactory.settings import Settings

if TYPE_CHECKING:
    from aifactory.export.source import ExportSource

Progress = Callable[[float, str], None]


def _quiet(fraction: float, message: str) -> None:
    pass


def export_dir(settings: Settings) -> Path:
    """EXPORT_DIR, or DATA_DIR/exports when it is empty."""
    return (
        Path(settings.export_dir).expanduser()
        if str(settings.export_dir)
        else Path(settings.data_dir) / "exports"
    )


def hf(source: ExportSource, out: Path, progress: Progress = _quiet) -> dict[str, Any]:
    from aifactory.export.hf import write_hf

    write_hf(source, out, progress)
    return {"target": "hf", "file": str(out), "directory": str(out), "model": source.name}


def gguf(source: ExportSource, out: Path, kind: str, progress: Progress = _quiet) -> dict[str, Any]:
    from aifactory.export.gguf_file import export_gguf

    summary = export_gguf(source, out, kind, progress)
    return {"target": "gguf", "file": str(out), **summary, "model": source.name}


def ollama(
    settings: Settings,
    source: ExportSource,
    name: str,
    directory: Path,
    kind: str,
    *,
    system: str = "",
    create: bool = True,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """The GGUF and its Modelfile in `directory` (which must not exist), then `ollama create` if the
    binary is there."""
    from aifactory.export.gguf_file import export_gguf

    targets.check_ollama_name(name)
    check_free(directory)
    stem = targets.ollama_file_stem(name)
    gguf_name = f"{stem}-{kind}.gguf"
    with staged_directory(directory) as staging:
        summary = export_gguf(source, staging / gguf_name, kind, lambda f, m: progress(0.95 * f, m))
        text = targets.modelfile(
            gguf_name, context=source.config.max_seq_len, system=system, source=source.describe()
        )
        (staging / "Modelfile").write_text(text, encoding="utf-8")
    modelfile = directory / "Modelfile"
    command = targets.ollama_command(settings.ollama_bin, name, modelfile)
    created, output = False, ""
    if create:
        progress(0.96, f"running {' '.join(command)}")
        created, output = targets.run_ollama_create(settings.ollama_bin, name, modelfile)
    result = targets.OllamaResult(directory, directory / gguf_name, modelfile, command, created, output)
    return {
        "target": "ollama",
        "file": str(result.gguf),
        "name": name,
        **targets.describe_ollama(result),
        "bytes": summary["bytes"],
        "model": source.name,
    }


def lmstudio(
    settings: Settings,
    source: ExportSource,
    kind: str,
    *,
    models_dir: Path | None = None,
    publisher: str = "aifactory",
    model: str | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """The GGUF in LM Studio's models folder, as publisher/model/model-TYPE.gguf."""
    from aifactory.export.gguf_file import export_gguf

    root = Path(models_dir or settings.lmstudio_models_dir).expanduser()
    out = targets.lmstudio_path(root, publisher, model or source.name, kind)
    summary = export_gguf(source, out, kind, progress)
    return {"target": "lmstudio", "file": str(out), "models_dir": str(root), **summary, "model": source.name}


def check_type(kind: str) -> str:
    from aifactory.export.gguf_file import TYPES

    if kind not in TYPES:
        raise ExportError(f"unknown GGUF type {kind!r}: use one of {', '.join(TYPES)}")
    return kind
