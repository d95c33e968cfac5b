"""Which checkpoint a model name means: `latest`, `best`, `production`, `vN`, or the default.

    default (no name, "aifactory")  production when USE_PRODUCTION_MODEL=1 and one exists, else latest
    latest / best                   the trainer's pointers in DATA_DIR/checkpoints
    production / vN                 the model registry; until it exists, an unknown name (404)

Asking for `production` by name when nothing was promoted is a 404, not a silent fallback: a client that
names the production model must not get an unevaluated one. Only the default falls back to `latest`.
Ollama-style names work too: `aifactory:latest` is `latest`, `aifactory` is the default.

`resolve` reads two small JSON files, so both processes call it per request; the inference engine polls
it to notice a new checkpoint (hot switch). Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory.settings import Settings

BASE_NAME = "aifactory"  # what Ollama clients see: aifactory:latest, aifactory:best
DEFAULT = "default"
POINTER_NAMES = ("latest", "best")


class ModelNotFound(LookupError):
    """The name means no model this factory has."""


class NoModelYet(LookupError):
    """Training has not written a checkpoint yet."""


@dataclass(frozen=True)
class ModelEntry:
    name: str  # latest, best, production, v3
    directory: Path
    meta: dict[str, Any] = field(compare=False, repr=False)

    @property
    def checkpoint(self) -> str:
        return self.directory.name

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def tokenizer_hash(self) -> str:
        return str(self.meta.get("tokenizer_hash", ""))

    @property
    def parameters(self) -> int:
        return int(self.meta.get("parameters", 0))

    @property
    def saved_at(self) -> float:
        return float(self.meta.get("saved_at", 0.0))

    @property
    def size_bytes(self) -> int:
        return sum(int(info.get("bytes", 0)) for info in self.meta.get("files", {}).values())

    @property
    def digest(self) -> str:
        return str(self.meta.get("files", {}).get("model.safetensors", {}).get("sha256", ""))

    @property
    def context_length(self) -> int:
        return int(self.meta.get("model", {}).get("max_seq_len", 0))


def checkpoints_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "checkpoints"


def registry_entry(settings: Settings, name: str) -> ModelEntry | None:
    """`production` and `vN` from the model registry: DATA_DIR/models/production.json names the
    production version, DATA_DIR/models/vN/meta.json describes a version (registry/pointer.py). Two
    small files, no database: read per request, so a promotion or rollback is followed at once."""
    from aifactory.registry import pointer

    if name == "production":
        current = pointer.read(settings)
        if current is None:
            return None
        version = int(current["version"])
    elif name.startswith("v") and name[1:].isdigit():
        version = int(name[1:])
    else:
        return None
    directory = pointer.version_dir(settings, version)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None  # not registered, or removed by retention
    return ModelEntry(name=name, directory=directory, meta=meta)


def _pointer(settings: Settings, name: str) -> ModelEntry | None:
    root = checkpoints_root(settings)
    try:
        directory = root / json.loads((root / f"{name}.json").read_text())["dir"]
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or replaced while we read: the caller's next look sees the new one
    return ModelEntry(name=name, directory=directory, meta=meta)


def canonical(name: str | None) -> str:
    """`aifactory:latest` -> latest, `aifactory` / "" / None -> default, `Latest` -> latest."""
    text = (name or "").strip().lower()
    for prefix in (f"{BASE_NAME}:", f"{BASE_NAME}/", f"{BASE_NAME}@"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return DEFAULT if text in ("", BASE_NAME, DEFAULT) else text


def resolve(settings: Settings, name: str | None) -> ModelEntry:
    """The checkpoint `name` means now. ModelNotFound for an unknown name, NoModelYet before training."""
    wanted = canonical(name)
    if wanted == DEFAULT:
        if settings.use_production_model:
            entry = registry_entry(settings, "production")
            if entry is not None:
                return entry
        entry = _pointer(settings, "latest")
        if entry is None:
            raise NoModelYet("training has not produced a model yet")
        return entry
    if wanted in POINTER_NAMES:
        entry = _pointer(settings, wanted)
        if entry is None:
            if _pointer(settings, "latest") is None:
                raise NoModelYet("training has not produced a model yet")
            raise ModelNotFound(f"there is no {wanted} checkpoint yet")
        return entry
    if wanted == "production" or (wanted.startswith("v") and wanted[1:].isdigit()):
        entry = registry_entry(settings, wanted)
        if entry is None:
            what = (
                "no model has been promoted to production yet"
                if wanted == "production"
                else (f"there is no model version {wanted}")
            )
            raise ModelNotFound(f"{what} (known models: {', '.join(known_names(settings)) or 'none'})")
        return entry
    raise ModelNotFound(
        f"unknown model {name!r}: use latest, best, production or vN "
        f"(known now: {', '.join(known_names(settings)) or 'none'})"
    )


def available(settings: Settings) -> list[ModelEntry]:
    """The models a client can ask for now (for /v1/models and /ollama/api/tags)."""
    entries = []
    production = registry_entry(settings, "production")
    if production is not None:
        entries.append(production)
    for name in POINTER_NAMES:
        entry = _pointer(settings, name)
        if entry is not None:
            entries.append(entry)
    return entries


def name_of(settings: Settings, directory: Path) -> str:
    """The name a client would use for a checkpoint directory (latest when several fit)."""
    for entry in available(settings):
        if entry.directory == directory:
            return entry.name
    return "latest"


def known_names(settings: Settings) -> list[str]:
    return [entry.name for entry in available(settings)]


def tokenizer_dir(settings: Settings, tokenizer_hash: str) -> Path | None:
    """The tokenizer generation whose hash a checkpoint records, if it is still on disk."""
    root = Path(settings.data_dir) / "tokenizer"
    if not root.is_dir():
        return None
    for path in sorted(root.glob("g*/tokenizer.json"), reverse=True):
        try:
            if json.loads(path.read_text()).get("tokenizer_hash") == tokenizer_hash:
                return path.parent
        except (OSError, ValueError):
            continue
    return None


@functools.lru_cache(maxsize=8)
def _tokenizer_at(directory: str) -> Any:
    from aifactory.dataset.tokenizer import Tokenizer  # sentencepiece, not torch

    return Tokenizer(Path(directory))


def tokenizer_for(settings: Settings, entry: ModelEntry) -> Any:
    """The tokenizer a checkpoint was trained with (loaded once per generation), or ModelNotFound."""
    where = tokenizer_dir(settings, entry.tokenizer_hash)
    if where is None:
        raise ModelNotFound(
            f"the tokenizer of {entry.checkpoint} ({entry.tokenizer_hash[:16]}) is missing from "
            f"{Path(settings.data_dir) / 'tokenizer'}"
        )
    return _tokenizer_at(str(where))
