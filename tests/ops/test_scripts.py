"""The deployment files pass their tools: shellcheck, docker-compose's validation, systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML comes with huggingface_hub (the tokenizers package needs it)

from aifactory.ops import service
from aifactory.settings import Settings
from tests.processes import ROOT

SCRIPTS = sorted([ROOT / "setup.sh", *(ROOT / "ops").glob("*.sh")])


def tool(name: str, package: str) -> str:
    """The path of a tool the tests need; a missing one fails with what to install (`make install-test`)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (make install-test does it as root)")
    return path


def test_every_script_is_executable_and_shellcheck_clean() -> None:
    assert len(SCRIPTS) >= 7
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    run = subprocess.run(
        [tool("shellcheck", "shellcheck"), *map(str, SCRIPTS)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("compose", "env"),
    [
        ("compose.yaml", {"POSTGRES_PASSWORD": "secret", "ADMIN_API_TOKEN": "token"}),
        ("compose.worker.yaml", {"DATABASE_URL": "postgresql://factory:secret@master:5432/factory"}),
    ],
)
def test_the_compose_files_are_valid(compose: str, env: dict[str, str], tmp_path: Path) -> None:
    docker_compose = tool("docker-compose", "docker-compose")
    run = subprocess.run(
        [docker_compose, "-f", str(ROOT / compose), "config", "-q"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Without the secrets it refuses to start with the variable named, instead of an empty password.
    missing = subprocess.run(
        [docker_compose, "-f", str(ROOT / compose), "config", "-q"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and next(iter(env)) in missing.stderr


def test_the_master_compose_runs_postgres_and_adminer_with_healthchecks_and_restarts(tmp_path: Path) -> None:
    run = subprocess.run(
        [tool("docker-compose", "docker-compose"), "-f", str(ROOT / "compose.yaml"), "config"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "POSTGRES_PASSWORD": "pw",
            "ADMIN_API_TOKEN": "t",
        },
        capture_output=True,
        text=True,
    )
    config = yaml.safe_load(run.stdout)
    services = config["services"]
    assert set(services) == {"factory", "postgres", "adminer"}
    assert all(s["restart"] == "unless-stopped" and "healthcheck" in s for s in services.values())
    assert "8080" in str(services["adminer"]["ports"])
    factory = services["factory"]["environment"]
    assert factory["DB_UI_URL"] == "http://localhost:8080" and "@postgres:5432/" in factory["DATABASE_URL"]
    assert set(config["volumes"]) == {"factory-data", "postgres-data"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER factory" in dockerfile and "ARG TORCH_INDEX" in dockerfile


@pytest.mark.parametrize("user", [False, True])
def test_the_systemd_unit_passes_systemd_analyze(user: bool, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, engine_stop_timeout_sec=120)
    text = service.unit_text(settings, user=user, working_dir=tmp_path, python=sys.executable)
    assert "Restart=on-failure" in text and "TimeoutStopSec=180" in text
    assert "StandardOutput=journal" in text and f"ExecStart={sys.executable} -m aifactory up" in text
    unit = tmp_path / service.UNIT_NAME
    unit.write_text(text)
    runtime = tmp_path / "runtime"  # a user manager needs a runtime directory (none in CI containers)
    runtime.mkdir(mode=0o700)
    run = subprocess.run(
        [tool("systemd-analyze", "systemd"), "verify", *(["--user"] if user else []), str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
    )
    # A setting systemd cannot parse is only a warning ("..., ignoring"): none may be printed either.
    assert run.returncode == 0 and "ignoring" not in run.stderr, run.stdout + run.stderr


def test_service_install_writes_the_unit_of_the_role_and_uninstall_removes_it(tmp_path: Path) -> None:
    from tests.processes import aifactory

    units = tmp_path / "units"
    node = tmp_path / "node"
    node.mkdir()
    (node / ".env").write_text("SYSTEM_ROLE=worker\nDATABASE_URL=postgresql://u@h:5432/d\n")
    installed = aifactory("service", "install", "--user", "--unit-dir", str(units), "--no-enable", cwd=node)
    assert installed.returncode == 0, installed.stderr
    text = (units / service.UNIT_NAME).read_text()
    assert f"WorkingDirectory={node}" in text and "-m aifactory worker" in text and "User=" not in text
    removed = aifactory("service", "uninstall", "--user", "--unit-dir", str(units), cwd=node)
    assert removed.returncode == 0 and not (units / service.UNIT_NAME).exists()
