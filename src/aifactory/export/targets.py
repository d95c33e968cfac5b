"""Ollama and LM Studio: where a GGUF goes and what goes with it.

Ollama imports a model from a Modelfile: FROM the GGUF, TEMPLATE (Ollama's Go template for our chat
format), PARAMETER stop for the end of a turn and of a document, and default sampling. `aifactory export
ollama NAME` writes both into one folder and runs `ollama create NAME -f Modelfile` when an `ollama`
binary is on the PATH (OLLAMA_BIN); otherwise it prints that one command. The TEMPLATE is explicit
rather than left to Ollama's template detection, which only recognises templates it already knows.

LM Studio finds models under its models folder as `publisher/model/file.gguf` and reads the chat
template from the GGUF itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory.export import ExportError, template

# Ollama model names: [namespace/]name[:tag], letters, digits, '.', '_' and '-'.
OLLAMA_NAME = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,79}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,79}(?::[A-Za-z0-9._-]{1,80})?$"
)
PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_ollama_name(name: str) -> str:
    if not OLLAMA_NAME.match(name):
        raise ExportError(
            f"{name!r} is not a valid Ollama model name: letters, digits, '.', '_' and '-', "
            "optionally namespace/ in front and :tag at the end (e.g. aifactory:latest)"
        )
    return name


def check_path_part(value: str, what: str) -> str:
    if not PATH_PART.match(value) or value in (".", ".."):
        raise ExportError(f"{what} {value!r} must be letters, digits, '.', '_' and '-' (a folder name)")
    return value


def ollama_file_stem(name: str) -> str:
    """A file name for a model name (no '/' or ':')."""
    return name.replace("/", "-").replace(":", "-")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile(gguf_name: str, *, context: int, system: str = "", source: str = "") -> str:
    """The Modelfile for a GGUF next to it (FROM is relative to the Modelfile's folder)."""
    lines = []
    if source:
        lines.append(f"# AI Factory Engine model ({source})")
    lines += [
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template.OLLAMA_TEMPLATE}"""',
        *(f"PARAMETER stop {_quoted(stop)}" for stop in template.STOP_STRINGS),
        *(f"PARAMETER {key} {value}" for key, value in template.SAMPLING.items()),
        f"PARAMETER num_ctx {context}",
    ]
    if system:
        if '"""' in system:
            raise ExportError('a system prompt for Ollama cannot contain """')
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class OllamaResult:
    directory: Path
    gguf: Path
    modelfile: Path
    command: list[str]
    created: bool  # `ollama create` ran and succeeded
    output: str = ""


def ollama_command(binary: str, name: str, modelfile_path: Path) -> list[str]:
    return [binary, "create", name, "-f", str(modelfile_path)]


def run_ollama_create(binary: str, name: str, modelfile_path: Path) -> tuple[bool, str]:
    """(whether `ollama create` ran and succeeded, its output); (False, "") when there is no binary."""
    found = shutil.which(binary)
    if found is None:
        return False, ""
    try:
        done = subprocess.run(
            ollama_command(found, name, modelfile_path),
            cwd=modelfile_path.parent,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(f"`ollama create {name}` could not run: {exc}") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise ExportError(
            f"`ollama create {name}` failed (exit {done.returncode}): {output[-2000:]}; the GGUF and "
            f"Modelfile are in {modelfile_path.parent}"
        )
    return True, output


def lmstudio_path(models_dir: Path, publisher: str, model: str, kind: str) -> Path:
    """LM Studio's layout: MODELS_DIR/publisher/model/model-TYPE.gguf."""
    check_path_part(publisher, "the publisher")
    check_path_part(model, "the model name")
    return Path(models_dir).expanduser() / publisher / model / f"{model}-{kind.upper()}.gguf"


def describe_ollama(result: OllamaResult) -> dict[str, Any]:
    return {
        "directory": str(result.directory),
        "gguf": str(result.gguf),
        "modelfile": str(result.modelfile),
        "command": " ".join(result.command),
        "created": result.created,
    }
