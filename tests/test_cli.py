"""The `aifactory` command as a person uses it: real processes, real ports, clear errors."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from aifactory.db import migrate
from tests.conftest import free_port
from tests.processes import aifactory, start_factory, stop
from tests.test_settings import SEED_DEFAULTS


def test_help_explains_every_command(tmp_path: Path) -> None:
    main = aifactory("--help", cwd=tmp_path)
    assert main.returncode == 0
    for command in ("up", "worker", "status", "config", "db"):
        assert command in main.stdout
        sub = aifactory(command, "--help", cwd=tmp_path)
        assert sub.returncode == 0 and len(sub.stdout.splitlines()) > 3, command
    assert "upgrade" in aifactory("db", "--help", cwd=tmp_path).stdout


def test_config_lists_every_seed_variable_and_masks_secrets(tmp_path: Path) -> None:
    result = aifactory(
        "config",
        cwd=tmp_path,
        ADMIN_API_TOKEN="top-secret",
        DATABASE_URL="postgresql://llm:hunter2@db:5432/llm",
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split("=", 1)[0]: line for line in result.stdout.splitlines() if "=" in line}
    for name in SEED_DEFAULTS:
        assert name in lines, name
    assert "top-secret" not in result.stdout and "hunter2" not in result.stdout
    assert lines["ADMIN_API_TOKEN"].startswith("ADMIN_API_TOKEN=***") and "# set" in lines["ADMIN_API_TOKEN"]
    assert (
        lines["PROMOTION_MIN_SCORE"].startswith("PROMOTION_MIN_SCORE=0.25")
        and "# default" in lines["PROMOTION_MIN_SCORE"]
    )
    assert "auto-tune profile" in result.stdout and "max_crawler_workers" in result.stdout


def test_config_reads_dotenv_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HN_ITEMS=33\n")
    assert "HN_ITEMS=33    # set" in aifactory("config", cwd=tmp_path).stdout


def test_invalid_setting_stops_with_the_variable_named(tmp_path: Path) -> None:
    result = aifactory("up", cwd=tmp_path, PORT="eighty")
    assert result.returncode == 2
    assert result.stderr.startswith("aifactory: invalid setting PORT='eighty'")
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = aifactory("up", cwd=tmp_path, DATABASE_URL=f"postgresql://llm:hunter2@127.0.0.1:{port}/llm")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert f"cannot connect to database postgresql://llm:***@127.0.0.1:{port}/llm" in result.stderr


def test_network_exposed_without_token_is_refused(tmp_path: Path) -> None:
    result = aifactory("up", cwd=tmp_path, HOST="0.0.0.0")
    assert result.returncode == 1 and "ADMIN_API_TOKEN" in result.stderr


def test_worker_needs_postgresql(tmp_path: Path) -> None:
    result = aifactory("worker", cwd=tmp_path)
    assert result.returncode == 1 and "DATABASE_URL=postgresql://" in result.stderr


def test_db_upgrade_and_status_on_a_fresh_data_dir(tmp_path: Path) -> None:
    assert "is empty" in aifactory("status", cwd=tmp_path).stdout
    first = aifactory("db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0 and f"upgraded from empty to {migrate.head_revision()}" in first.stdout
    assert "up to date" in aifactory("db", "upgrade", cwd=tmp_path).stdout
    assert (tmp_path / "data" / "aifactory.db").exists()
    assert "no nodes have registered yet" in aifactory("status", cwd=tmp_path).stdout


def test_up_serves_the_api_refuses_a_twin_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    factory = start_factory(port, tmp_path)
    try:
        status = httpx.get(f"http://127.0.0.1:{port}/api/status").json()
        assert status["node"]["role"] == "master"
        node_id = status["node"]["node_id"]
        assert (tmp_path / "data" / "node_id_master").read_text().strip() == node_id

        same_db = aifactory("up", cwd=tmp_path, PORT=free_port())
        assert same_db.returncode == 1 and "already running" in same_db.stderr

        other_dir = tmp_path / "other"
        other_dir.mkdir()
        same_port = aifactory("up", cwd=other_dir, PORT=port)
        assert (
            same_port.returncode == 1 and f"port {port}" in same_port.stderr and "in use" in same_port.stderr
        )

        shown = aifactory("status", cwd=tmp_path)
        assert node_id in shown.stdout and "role=master" in shown.stdout
    finally:
        started = time.monotonic()
        output = stop(factory, signal.SIGTERM)
    assert factory.returncode == 0, output
    assert time.monotonic() - started < 10
    assert f"dashboard at http://127.0.0.1:{port}/ (API: http://127.0.0.1:{port}/api" in output
    assert "stopped" in aifactory("status", cwd=tmp_path).stdout


def test_restart_keeps_the_node_identity(tmp_path: Path) -> None:
    port = free_port()
    first = start_factory(port, tmp_path)
    node_id = httpx.get(f"http://127.0.0.1:{port}/api/status").json()["node"]["node_id"]
    stop(first, signal.SIGINT)
    assert first.returncode == 0
    second = start_factory(port, tmp_path)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/status").json()["node"]["node_id"] == node_id
    finally:
        stop(second)


@pytest.mark.postgres
def test_up_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    factory = start_factory(port, tmp_path, DATABASE_URL=pg_url)
    try:
        config = httpx.get(f"http://127.0.0.1:{port}/api/runtime-config").json()
        assert config["database_backend"] == "postgresql"
    finally:
        stop(factory)
    assert factory.returncode == 0
