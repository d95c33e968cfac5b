"""setup.sh without questions: a master on SQLite, a worker on the test PostgreSQL, Docker chosen
where there is none, and the .env a LAN or Docker setup needs."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aifactory.cluster import membership
from aifactory.db import Database, migrate
from tests.conftest import free_port, wait_for
from tests.processes import ROOT, start_factory, stop

VENV = Path(sys.prefix)  # this test run's installed venv: setup.sh finds it installed and keeps it


def setup(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIFACTORY_", "SETUP_"))}
    for name in ("DATABASE_URL", "HOST", "PORT", "DATA_DIR", "ADMIN_API_TOKEN", "ALLOWED_HOSTS", "DB_UI_URL"):
        clean.pop(name, None)
    if path is not None:
        clean["PATH"] = path
    return subprocess.run(
        [str(ROOT / "setup.sh"), "--non-interactive", "--venv", str(VENV), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def env_file(directory: Path) -> dict[str, str]:
    lines = (directory / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def effective(directory: Path) -> dict[str, str]:
    """The settings the factory reads from that .env (`aifactory config --json`, secrets masked)."""
    import json

    run = subprocess.run(
        [str(VENV / "bin" / "aifactory"), "config", "--json"],
        cwd=directory,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["settings"]


def test_a_master_on_sqlite_is_set_up_and_a_second_run_keeps_the_token_unprinted(tmp_path: Path) -> None:
    node = tmp_path / "node"
    first = setup(
        "--role", "master", "--db", "sqlite", "--host", "0.0.0.0", "--dir", str(node), "--no-service"
    )
    assert first.returncode == 0, first.stderr
    values = env_file(node)
    token = values["ADMIN_API_TOKEN"]
    assert len(token) >= 24 and first.stdout.count(token) == 1  # shown once, when it was made
    assert values["SYSTEM_ROLE"] == "master" and values["DATABASE_URL"] == ""
    assert values["DATA_DIR"] == str(node / "data") and values["HOST"] == "0.0.0.0"
    assert socket.gethostname() in values["ALLOWED_HOSTS"].split(",")  # reachable by name on the LAN
    assert (node / ".env").stat().st_mode & 0o777 == 0o600
    assert f"{VENV} is installed already" in first.stdout and "aifactory up" in first.stdout
    settings = effective(node)
    assert settings["SYSTEM_ROLE"] == "master" and settings["HOST"] == "0.0.0.0"
    assert settings["ADMIN_API_TOKEN"] not in ("", token)  # set, and masked

    # The node starts from that .env and answers by this machine's name with the token it was given.
    port = free_port()
    factory = start_factory(port, node)  # on loopback (the test binds no LAN port), .env otherwise
    try:
        headers = {"host": f"{socket.gethostname()}:{port}", "x-admin-token": token}
        answer = httpx.get(f"http://127.0.0.1:{port}/api/runtime-config", headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.json()["admin_token_required"] is True
        assert (node / "data" / "aifactory.db").is_file()
    finally:
        stop(factory)

    (node / ".env").write_text((node / ".env").read_text() + "MODEL_SIZE=tiny\n")
    again = setup("--dir", str(node), "--no-service")
    assert again.returncode == 0, again.stderr
    assert token not in again.stdout + again.stderr and "admin token: kept" in again.stdout
    assert env_file(node) == {**values, "MODEL_SIZE": "tiny"}  # same answers, other lines kept


def test_a_worker_joins_the_test_postgresql(pg_url: str, tmp_path: Path) -> None:
    master = Database(pg_url)
    migrate.upgrade(master)  # what the master does when it starts
    node = tmp_path / "worker"
    run = setup("--role", "worker", "--database-url", pg_url, "--dir", str(node), "--no-service")
    assert run.returncode == 0, run.stderr
    assert "PostgreSQL answers" in run.stdout and "aifactory worker" in run.stdout
    values = env_file(node)
    assert values["SYSTEM_ROLE"] == "worker" and values["DATABASE_URL"] == pg_url
    assert values["ADMIN_API_TOKEN"] == ""  # a worker serves no API
    assert effective(node)["SYSTEM_ROLE"] == "worker"
    # Started from that .env (as its service would), it joins: a worker node with heartbeats.
    worker = subprocess.Popen(
        [str(VENV / "bin" / "aifactory"), "worker"],
        cwd=node,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_") and k != "DATABASE_URL"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        joined = wait_for(
            lambda: [n for n in membership.list_nodes(master, offline_after=30) if n["online"]],
            timeout=60,
            what="the worker to register",
        )
        assert [n["role"] for n in joined] == ["worker"]  # type: ignore[union-attr]
    finally:
        stop(worker)
        master.dispose()


def test_a_worker_with_an_unreachable_or_missing_database_is_told_what_to_fix(tmp_path: Path) -> None:
    unreachable = setup(
        "--role", "worker", "--database-url", "postgresql://u:secret@127.0.0.1:9/db",
        "--dir", str(tmp_path / "a"), "--no-service",
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "cannot connect to database postgresql://u:***@127.0.0.1:9/db" in unreachable.stderr
    assert "secret" not in unreachable.stderr + unreachable.stdout
    sqlite_worker = setup("--role", "worker", "--db", "sqlite", "--dir", str(tmp_path / "b"), "--no-service")
    assert sqlite_worker.returncode == 1 and "a worker joins its master's PostgreSQL" in sqlite_worker.stderr
    bad_role = setup("--role", "boss", "--dir", str(tmp_path / "c"))
    assert bad_role.returncode == 1 and "--role must be master or worker, not 'boss'" in bad_role.stderr


def path_without(tmp_path: Path, *names: str) -> str:
    """A PATH with every program of this one except `names`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if program.name not in names:
                (bin_dir / program.name).unlink(missing_ok=True)
                (bin_dir / program.name).symlink_to(program)
    return str(bin_dir)


def test_docker_chosen_without_docker_is_explained_and_the_other_path_named(tmp_path: Path) -> None:
    run = setup("--db", "docker", "--dir", str(tmp_path / "node"), path=path_without(tmp_path, "docker"))
    assert run.returncode == 3
    assert "Docker is not installed (no 'docker' on PATH)" in run.stderr
    assert "./setup.sh --install venv --db sqlite" in run.stderr


def test_a_docker_master_gets_the_lan_names_and_the_adminer_link(tmp_path: Path) -> None:
    # No Docker engine here: a `docker` that records what setup.sh asks of it.
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    calls = tmp_path / "docker-calls"
    (fake / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "docker").chmod(0o755)
    node = tmp_path / "node"
    run = setup(
        "--role", "master", "--db", "docker", "--install", "docker", "--dir", str(node), "--no-service",
        path=f"{fake}{os.pathsep}{os.environ['PATH']}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    values = env_file(node)
    password = values["POSTGRES_PASSWORD"]
    assert values["DATABASE_URL"] == f"postgresql://factory:{password}@postgres:5432/factory"
    assert values["HOST"] == "0.0.0.0" and values["DATA_DIR"] == "/data"
    assert socket.gethostname() in values["ALLOWED_HOSTS"].split(",")
    assert values["DB_UI_URL"].startswith("http://") and values["DB_UI_URL"].endswith(":8080")
    assert run.stdout.count(password) == 1
    recorded = calls.read_text()
    assert f"compose -f {ROOT / 'compose.yaml'} --env-file {node / '.env'} build" in recorded
    again = setup("--dir", str(node), "--no-service", path=f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert again.returncode == 0 and password not in again.stdout + again.stderr
    assert env_file(node)["POSTGRES_PASSWORD"] == password


def test_interactively_each_question_is_asked_with_its_default(tmp_path: Path) -> None:
    node = tmp_path / "node"
    pid, terminal = pty.fork()
    if pid == 0:  # the child: setup.sh on a terminal of its own
        os.execv(
            str(ROOT / "setup.sh"), ["setup.sh", "--dir", str(node), "--no-service", "--venv", str(VENV)]
        )
    answers = [b"\n", b"\n", b"\n", b"0.0.0.0\n"]  # role, database, install: the defaults; then the LAN
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(terminal, 4096)
        except OSError:  # the child has exited and closed the terminal
            break
        screen += data
        if data.rstrip().endswith(b"]:") and answers:
            os.write(terminal, answers.pop(0))
    _, status = os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    for question in ("Role of this node", "Database:", "Install:", "Bind address"):
        assert question in text
    values = env_file(node)
    assert (
        values["SYSTEM_ROLE"] == "master" and values["SETUP_DB"] == "sqlite" and values["HOST"] == "0.0.0.0"
    )
