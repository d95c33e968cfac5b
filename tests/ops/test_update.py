"""`aifactory update` from a version.json on a local HTTP server: verified downloads, refused bad ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from aifactory.ops.update import UpdateError, app_report, fetch_model, read_release
from aifactory.train.checkpoint import CheckpointStore
from tests.processes import aifactory


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(root: Path, tmp_path: Path, **overrides: Any) -> None:
    """A checkpoint's model files and a version.json listing them (relative URLs) under `root`."""
    store = CheckpointStore(tmp_path / "trained")
    folder = store.save(
        {"w": torch.arange(16, dtype=torch.float32)}, {"step": 7, "tokenizer_hash": "t"}, None
    )
    release = root / "models" / "2026.12.01"
    release.mkdir(parents=True)
    files = {}
    for name in ("model.safetensors", "meta.json"):
        (release / name).write_bytes((folder / name).read_bytes())
        files[name] = {"url": f"models/2026.12.01/{name}", "sha256": sha256(release / name)}
    files["model.safetensors"]["bytes"] = (release / "model.safetensors").stat().st_size
    data = {"app_version": "0.1.0", "model": {"version": "2026.12.01", "files": files}, **overrides}
    (root / "version.json").write_text(json.dumps(data))


def test_a_model_whose_hashes_match_is_downloaded_and_checked(
    server: tuple[str, Path], make_settings: Any, tmp_path: Path
) -> None:
    url, root = server
    publish(root, tmp_path)
    settings = make_settings()
    version, staging = fetch_model(settings, read_release(f"{url}/version.json"))
    assert version == "2026.12.01"
    assert sha256(staging / "model.safetensors") == sha256(root / "models/2026.12.01/model.safetensors")
    assert staging.name == "2026.12.01" and staging.parent.parent == settings.data_dir / "models"


def test_a_wrong_hash_is_refused_with_the_file_named_and_nothing_kept(
    server: tuple[str, Path], make_settings: Any, tmp_path: Path
) -> None:
    url, root = server
    publish(root, tmp_path)
    data = json.loads((root / "version.json").read_text())
    data["model"]["files"]["model.safetensors"]["sha256"] = "0" * 64
    (root / "version.json").write_text(json.dumps(data))
    settings = make_settings()
    with pytest.raises(UpdateError, match=r"model\.safetensors from http://.* does not match version\.json"):
        fetch_model(settings, read_release(f"{url}/version.json"))
    assert list((settings.data_dir / "models").iterdir()) == []
    # The command says the same and fails.
    run = aifactory("update", "model", "--from", f"{url}/version.json", cwd=tmp_path, DATA_DIR=tmp_path / "d")
    assert run.returncode == 1 and "does not match version.json" in run.stderr


def test_a_file_swapped_on_the_server_and_a_bad_version_json_are_refused(
    server: tuple[str, Path], make_settings: Any, tmp_path: Path
) -> None:
    url, root = server
    publish(root, tmp_path)
    (root / "models/2026.12.01/meta.json").write_text("{}")  # replaced after version.json was written
    with pytest.raises(UpdateError, match=r"meta\.json from .* does not match"):
        fetch_model(make_settings(), read_release(f"{url}/version.json"))
    (root / "version.json").write_text("not json")
    with pytest.raises(UpdateError, match="is not valid JSON"):
        read_release(f"{url}/version.json")
    with pytest.raises(UpdateError, match="cannot download"):
        read_release(f"{url}/missing.json")
    (root / "version.json").write_text(json.dumps({"model": {"files": {"meta.json": {}}}}))
    with pytest.raises(UpdateError, match=r"lists no model\.safetensors"):
        fetch_model(make_settings(), read_release(f"{url}/version.json"))


def test_update_app_reports_a_newer_version_with_the_upgrade_steps(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = server
    (root / "version.json").write_text(
        json.dumps({"app_version": "0.10.0", "app": {"url": "aifactory-0.10.0.tar.gz", "sha256": "ab" * 32}})
    )
    newer, lines = app_report(read_release(f"{url}/version.json"), tmp_path)
    text = "\n".join(lines)
    assert newer and "aifactory 0.10.0 is available (this is 0.1.0)" in text
    assert f"aifactory @ {url}/aifactory-0.10.0.tar.gz#sha256={'ab' * 32}" in text
    assert "docker compose build && docker compose up -d" in text and "git pull && make install" in text
    (root / "version.json").write_text(json.dumps({"app_version": "0.1.0"}))
    run = aifactory("update", "app", "--from", f"{url}/version.json", cwd=tmp_path)
    assert run.returncode == 0 and "aifactory 0.1.0 is up to date" in run.stdout
