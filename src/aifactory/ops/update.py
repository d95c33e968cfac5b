"""`aifactory update model|app --from URL`: updates described by a `version.json` on a distribution server.

    {
      "app_version": "0.2.0",
      "app": {"url": "aifactory-0.2.0.tar.gz", "sha256": "..."},
      "model": {
        "version": "2026.12.01",
        "files": {
          "model.safetensors": {"url": "model.safetensors", "sha256": "...", "bytes": 1234},
          "meta.json": {"url": "meta.json", "sha256": "..."},
          "tokenizer.model": {"url": "tokenizer.model", "sha256": "..."},
          "tokenizer.json": {"url": "tokenizer.json", "sha256": "..."}
        }
      }
    }

URLs may be relative to the version.json's own URL (http, https or file). Every file is downloaded into a
staging folder and its sha256 checked while it arrives; a mismatch is refused with the file named and
nothing is registered. `aifactory update app` only reports: it never replaces the code it runs from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory import __version__
from aifactory.dataset.tokenizer import tokenizer_root
from aifactory.settings import Settings

MAX_VERSION_JSON = 1 << 20
TIMEOUT_SEC = 30
CHUNK = 1 << 20
MODEL_FILES = ("model.safetensors", "meta.json")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


class UpdateError(Exception):
    """The version.json or a download is wrong; the message names the URL or file."""


@dataclass
class Release:
    url: str  # of the version.json
    data: dict[str, Any]

    @property
    def app_version(self) -> str:
        return str(self.data.get("app_version", ""))

    def resolve(self, link: str) -> str:
        return urllib.parse.urljoin(self.url, link)


def _open(url: str) -> Any:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise UpdateError(f"{url}: only http://, https:// and file:// URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": f"aifactory/{__version__} update"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_SEC)
    except (OSError, ValueError) as exc:
        raise UpdateError(f"cannot download {url}: {exc}") from None


def read_release(url: str) -> Release:
    with _open(url) as response:
        body = response.read(MAX_VERSION_JSON + 1)
    if len(body) > MAX_VERSION_JSON:
        raise UpdateError(f"{url} is larger than {MAX_VERSION_JSON} bytes: not a version.json")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UpdateError(f"{url} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UpdateError(f"{url} must hold a JSON object")
    return Release(url, data)


def download(url: str, target: Path, sha256: str, size: int | None = None) -> int:
    """Download `url` to `target`, refusing it if its sha256 (or size) is not the expected one."""
    if not re.fullmatch(r"[0-9a-f]{64}", str(sha256).lower()):
        raise UpdateError(f"version.json gives no valid sha256 for {target.name} ({sha256!r})")
    digest = hashlib.sha256()
    received = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open(url) as response, open(target, "wb") as out:
        while chunk := response.read(CHUNK):
            received += len(chunk)
            if size is not None and received > size:
                raise UpdateError(
                    f"{url} is larger than the {size} bytes version.json gives for {target.name}"
                )
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size is not None and received != size:
        raise UpdateError(f"{url} has {received} bytes, version.json gives {size} for {target.name}")
    if digest.hexdigest() != str(sha256).lower():
        raise UpdateError(
            f"{target.name} from {url} does not match version.json: sha256 {digest.hexdigest()}, "
            f"{str(sha256).lower()} expected; nothing was installed"
        )
    return received


def model_files(release: Release) -> tuple[str, dict[str, dict[str, Any]]]:
    model = release.data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("files"), dict):
        raise UpdateError(f"{release.url} has no model.files: nothing to download")
    files: dict[str, dict[str, Any]] = model["files"]
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise UpdateError(f"{release.url} lists no {', '.join(missing)} under model.files")
    unknown = sorted(set(files) - set(MODEL_FILES) - set(TOKENIZER_FILES))
    if unknown:
        raise UpdateError(f"{release.url} lists unknown model files: {', '.join(unknown)}")
    return str(model.get("version") or "unversioned"), files


def fetch_model(settings: Settings, release: Release) -> tuple[str, Path]:
    """Download and verify the model of `release` into a staging folder under DATA_DIR/models."""
    version, files = model_files(release)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", version):
        raise UpdateError(f"{release.url}: model.version {version!r} must be letters, digits, . _ -")
    download_dir = Path(settings.data_dir) / "models" / f".download-{os.getpid()}"
    staging = download_dir / version  # the registry records the folder's name: the release's version
    shutil.rmtree(download_dir, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, entry in files.items():
            if not isinstance(entry, dict) or "url" not in entry:
                raise UpdateError(f"{release.url}: model.files.{name} needs a url and a sha256")
            size = entry.get("bytes")
            download(release.resolve(str(entry["url"])), staging / name, entry.get("sha256", ""), size)
        _check_checkpoint(staging, str(files["model.safetensors"].get("sha256", "")))
    except BaseException:
        shutil.rmtree(download_dir, ignore_errors=True)
        raise
    return version, staging


def _check_checkpoint(folder: Path, downloaded: str) -> None:
    """The weights are the ones meta.json describes (what the registry and the loader check again).
    `downloaded` is their sha256, verified while they were downloaded: no second pass over them."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        expected = meta["files"]["model.safetensors"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"the downloaded meta.json is not a checkpoint's ({exc})") from None
    if downloaded.lower() != str(expected).lower():
        raise UpdateError("the downloaded model.safetensors does not match its meta.json")


def place_tokenizer(settings: Settings, staging: Path) -> None:
    """Make the model's tokenizer available where serving looks for it (DATA_DIR/tokenizer/g<N>).

    A factory that has tokenizers of its own must already have this one: installing another would start a
    new generation of its dataset. A fresh install (a machine that only serves) takes the downloaded one."""
    meta = json.loads((staging / "meta.json").read_text())
    wanted = str(meta.get("tokenizer_hash", ""))
    root = tokenizer_root(Path(settings.data_dir))
    local = {}
    for info in root.glob("g[0-9]*/tokenizer.json") if root.is_dir() else []:
        local[json.loads(info.read_text()).get("tokenizer_hash")] = info.parent
    if wanted in local:
        return
    if not all((staging / name).is_file() for name in TOKENIZER_FILES):
        raise UpdateError(
            f"the model needs tokenizer {wanted[:16]}, which this factory does not have and version.json "
            f"does not include ({', '.join(TOKENIZER_FILES)} under model.files)"
        )
    info = json.loads((staging / "tokenizer.json").read_text())
    if info.get("tokenizer_hash") != wanted:
        raise UpdateError("the downloaded tokenizer.json is not the tokenizer meta.json names")
    if local:
        raise UpdateError(
            f"the model was trained with tokenizer {wanted[:16]}, not with one of this factory's "
            f"({', '.join(sorted(h[:16] for h in local))}): installing it would start a new "
            "dataset generation"
        )
    target = root / f"g{int(info.get('generation', 1)):04d}"
    partial = root / f".{target.name}.tmp-{os.getpid()}"
    partial.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(staging / name, partial / name)
    os.replace(partial, target)


def install_model(settings: Settings, db: Any, release: Release, *, promote: bool) -> dict[str, Any]:
    """Download, verify, register as a new model version and (with `promote`) make it production."""
    version, staging = fetch_model(settings, release)
    try:
        from aifactory.registry import RegistryError, versions

        place_tokenizer(settings, staging)
        try:
            row = versions.register(settings, db, staging, origin="update")
        except RegistryError as exc:
            raise UpdateError(str(exc)) from None
        number = int(row["version"])
        result: dict[str, Any] = {"release": version, "version": number, "promoted": False}
        if promote:
            result.update(promoted=True, rule=make_production(settings, db, number, release.url))
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    return result


def make_production(settings: Settings, db: Any, number: int, url: str) -> str:
    """Move production to version `number` as the registry's rollback does (compare-and-set, the pointer
    file, the history row). A published version was vetted by its publisher: it does not go through this
    factory's promotion gate, which may have no validation data (a node that only serves) or score it on
    another task. `aifactory rollback` returns to the version it replaced."""
    from aifactory.registry import pointer, versions

    before = versions.state(db)
    if before["production"] == number:
        return f"v{number} was production already"
    if not versions.move(db, before["revision"], number, before["production"]):
        raise UpdateError("another promotion or rollback moved production meanwhile; run the update again")
    pointer.write(settings, number, before["revision"] + 1)
    rule = f"installed from {url}"
    versions.record(db, "promote", version=number, previous=before["production"], forced=True, rule=rule)
    return rule


# --- the application ----------------------------------------------------------------------------------
def version_key(text: str) -> tuple[int, ...]:
    """0.10.1 > 0.9.0: numeric parts compared as numbers (a suffix such as rc1 is ignored)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:4])


def app_report(release: Release, repository: Path) -> tuple[bool, list[str]]:
    """(is a newer version available, the lines to print)."""
    available = release.app_version
    if not available:
        raise UpdateError(f"{release.url} has no app_version")
    newer = version_key(available) > version_key(__version__)
    if not newer:
        return False, [f"aifactory {__version__} is up to date (the newest is {available})"]
    app = release.data.get("app") if isinstance(release.data.get("app"), dict) else {}
    lines = [f"aifactory {available} is available (this is {__version__}). Upgrade steps:"]
    checkout = str(repository) if (repository / ".git").exists() else "YOUR-CHECKOUT"
    lines.append("  a venv install (setup.sh or make run):")
    lines.append(f"    cd {checkout} && git pull && make install")
    if app.get("url"):
        url, sha = release.resolve(str(app["url"])), app.get("sha256", "")
        lines.append(f'    .venv/bin/pip install "aifactory @ {url}{f"#sha256={sha}" if sha else ""}"')
    lines += [
        "    aifactory backup                                 # first, to be able to go back",
        "    systemctl restart aifactory   (or --user; the schema is migrated when the master starts)",
        "  Docker (compose.yaml):",
        f"    cd {checkout} && git pull && docker compose build && docker compose up -d",
        "  workers: the same on each worker, after the master (a worker refuses a newer schema)",
    ]
    return True, lines
