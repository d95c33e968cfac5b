"""`aifactory service install|status|uninstall`: the node as a systemd service, without Docker.

The unit runs `python -m aifactory up` (or `worker`) in the directory holding `.env`, restarts it when it
fails, and gives it long enough to stop for the trainer to write its checkpoint: the supervisor asks every
engine to stop and waits ENGINE_STOP_TIMEOUT_SEC, so systemd waits that plus a margin before SIGKILL.
Logs go to journald (`journalctl -u aifactory`, `--user-unit` for a user service).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

from aifactory.settings import Settings

UNIT_NAME = "aifactory.service"
STOP_MARGIN_SEC = 60  # beyond ENGINE_STOP_TIMEOUT_SEC: the web server, the heartbeat, the process pool


class ServiceError(Exception):
    """systemd is missing or refused; the message says what to do."""


def unit_dir(user: bool) -> Path:
    if user:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "systemd" / "user"
    return Path("/etc/systemd/system")


def unit_text(settings: Settings, *, user: bool, working_dir: Path, python: str = sys.executable) -> str:
    """The unit file: one node of the role in SYSTEM_ROLE, in `working_dir` (where its .env is)."""
    command = "up" if settings.system_role == "master" else "worker"
    stop_timeout = int(settings.engine_stop_timeout_sec) + STOP_MARGIN_SEC
    lines = [
        "[Unit]",
        f"Description=AI Factory Engine ({settings.system_role})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={working_dir}",
        f"ExecStart={_quoted(python)} -m aifactory {command}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to the node only; it stops its engine processes itself, then the rest get SIGKILL.
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=aifactory",
    ]
    if not user:
        lines.append(f"User={getpass.getuser()}")
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]
    return "\n".join(lines)


def systemctl(user: bool, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemctl") is None:
        raise ServiceError(
            "systemctl is not installed: this machine does not run systemd. Run the node with Docker "
            "(docker compose up -d) or under another supervisor (`aifactory up` in the foreground)"
        )
    command = ["systemctl", *(["--user"] if user else []), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise ServiceError(f"`{' '.join(command)}` failed: {reason[0] if reason else result.returncode}")
    return result


def install(settings: Settings, *, user: bool, directory: Path | None, enable: bool) -> Path:
    """Write the unit, reload systemd, enable it at boot and start it (or restart it if it runs)."""
    target = (directory or unit_dir(user)) / UNIT_NAME
    text = unit_text(settings, user=user, working_dir=Path.cwd())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except PermissionError:
        raise ServiceError(
            f"cannot write {target}: a system service needs root (sudo), or use --user"
        ) from None
    if enable:
        try:
            systemctl(user, "daemon-reload")
            systemctl(user, "enable", UNIT_NAME)
            systemctl(user, "restart", UNIT_NAME)
        except ServiceError as exc:
            booted = Path("/run/systemd/system").is_dir()  # what systemd itself checks
            hint = "" if booted else " (systemd is not running on this machine, e.g. in a container)"
            raise ServiceError(
                f"wrote {target}, but it is not enabled{hint}: {exc}. Run the node with Docker "
                "(compose.yaml) or `aifactory up` under another supervisor"
            ) from None
    return target


def status(user: bool) -> tuple[int, str]:
    result = systemctl(user, "status", "--no-pager", UNIT_NAME, check=False)
    return result.returncode, (result.stdout + result.stderr).strip()


def uninstall(*, user: bool, directory: Path | None) -> Path:
    target = (directory or unit_dir(user)) / UNIT_NAME
    if directory is None:
        systemctl(user, "disable", "--now", UNIT_NAME, check=False)
    target.unlink(missing_ok=True)
    if directory is None:
        systemctl(user, "daemon-reload", check=False)
    return target


def _quoted(path: str) -> str:
    """systemd splits ExecStart at spaces unless the word is in double quotes."""
    return f'"{path}"' if " " in path else path
