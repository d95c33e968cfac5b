"""The production pointer DATA_DIR/models/production.json and the version directories' paths.

Serving reads the pointer per request (serve/catalog.py) without touching the database, so both the
web process and the inference process follow a promotion or rollback at their next request. The
database row model_registry is the truth; the pointer is rewritten from it after each move."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from aifactory.settings import Settings

POINTER = "production.json"


def models_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "models"


def version_name(version: int) -> str:
    return f"v{version}"


def version_dir(settings: Settings, version: int) -> Path:
    return models_root(settings) / version_name(version)


def read(settings: Settings) -> dict[str, Any] | None:
    try:
        data = json.loads((models_root(settings) / POINTER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("version"), int) else None


def write(settings: Settings, version: int | None, revision: int) -> None:
    """Point production at `version` (None: remove the pointer), atomically."""
    root = models_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    path = root / POINTER
    if version is None:
        path.unlink(missing_ok=True)
        return
    record = {
        "version": version,
        "dir": version_name(version),
        "revision": revision,
        "updated_at": time.time(),
    }
    temporary = root / f".{POINTER}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
