"""Which model an evaluation reads: best, latest, production, vN or a directory. Reads JSON only (no
torch), so the web process can check a request before starting an evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory.evaluate import EvalError
from aifactory.serve import catalog
from aifactory.settings import Settings

META = "meta.json"


@dataclass(frozen=True)
class Target:
    name: str  # best, latest, production, v3, or the directory's name
    directory: Path
    meta: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.meta.get("files", {}).get("model.safetensors", {}).get("sha256", ""))

    @property
    def version(self) -> int | None:
        value = self.meta.get("registry", {}).get("version")
        return int(value) if value is not None else None


def resolve(settings: Settings, name: str | None) -> Target:
    """The model `name` means now; EvalError saying what is missing."""
    wanted = (name or "best").strip()
    path = Path(wanted).expanduser()
    if "/" in wanted or path.is_dir():
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError) as exc:
            raise EvalError(f"{path} is not a checkpoint or model version directory ({exc})") from None
        return Target(path.name, path, meta)
    try:
        entry = catalog.resolve(settings, wanted)
    except catalog.NoModelYet:
        raise EvalError(
            "no checkpoint to evaluate: training has not produced a model yet "
            "(`aifactory train` or the factory)"
        ) from None
    except catalog.ModelNotFound as exc:
        if wanted == "best" and catalog.canonical(wanted) == "best":
            raise EvalError(f"{exc}: the trainer marks a best checkpoint at its first validation") from None
        raise EvalError(str(exc)) from None
    return Target(entry.name, entry.directory, entry.meta)
