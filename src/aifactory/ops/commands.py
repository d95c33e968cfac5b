"""`aifactory service`, `aifactory backup`, `aifactory restore` and `aifactory update` (docs/deploy.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aifactory.settings import Settings


def _size(total: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return str(total)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.ops.backup import BackupError, backup, default_directory

    target = args.directory or default_directory()
    try:
        manifest = backup(settings, target)
    except BackupError as exc:
        print(f"aifactory backup: {exc}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in manifest["files"].values())
    summary = manifest["database_summary"]
    steps = ", ".join(f"{k} step {v}" for k, v in manifest["checkpoints"].items()) or "no checkpoints"
    datasets = ", ".join(d["tag"] for d in manifest["datasets"].values()) or "no dataset"
    print(
        f"backup written to {target}: {len(manifest['files'])} files, {_size(total)}, "
        f"in {manifest['seconds']}s"
    )
    print(f"    {summary['documents']} documents, dataset {datasets}, {steps}")
    print(f"    restore with: aifactory restore {target}")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.ops.backup import BackupError, restore

    try:
        manifest = restore(settings, args.directory, force=args.force)
    except BackupError as exc:
        print(f"aifactory restore: {exc}", file=sys.stderr)
        return 1
    summary = manifest["database_summary"]
    print(
        f"restored {args.directory} into DATA_DIR {Path(settings.data_dir).absolute()}: "
        f"{summary['documents']} documents, {len(manifest['files'])} files verified"
    )
    return 0


def cmd_service(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.ops import service

    try:
        if args.service_command == "unit":
            print(service.unit_text(settings, user=args.user, working_dir=Path.cwd()), end="")
            return 0
        if args.service_command == "install":
            path = service.install(
                settings, user=args.user, directory=args.unit_dir, enable=not args.no_enable
            )
            print(f"wrote {path}")
            if not args.no_enable:
                scope = "--user " if args.user else ""
                print(
                    f"enabled and started: systemctl {scope}status aifactory; "
                    f"journalctl {scope}-u aifactory -f"
                )
                if args.user:
                    print(
                        "to keep it running after you log out and across reboots: "
                        "sudo loginctl enable-linger $USER"
                    )
            return 0
        if args.service_command == "status":
            code, text = service.status(args.user)
            print(text)
            return code
        path = service.uninstall(user=args.user, directory=args.unit_dir)
        print(f"removed {path}")
        return 0
    except service.ServiceError as exc:
        print(f"aifactory service: {exc}", file=sys.stderr)
        return 1


def cmd_update(settings: Settings, args: argparse.Namespace) -> int:
    from aifactory.ops import update

    try:
        release = update.read_release(args.source)
        if args.update_command == "app":
            _newer, lines = update.app_report(release, Path(__file__).resolve().parents[3])
            print("\n".join(lines))
            return 0
        from aifactory.db.connect import opened_database

        with opened_database(settings) as db:
            result = update.install_model(settings, db, release, promote=args.promote)
    except update.UpdateError as exc:
        print(f"aifactory update: {exc}", file=sys.stderr)
        return 1
    print(f"model {result['release']} from {args.source} verified and registered as v{result['version']}")
    if result["promoted"]:
        print(f"v{result['version']} is production ({result.get('rule') or 'promoted'})")
    return 0


def add_parsers(sub: Any) -> None:
    """`service`, `backup`, `restore` and `update` on the `aifactory` parser."""
    svc = sub.add_parser(
        "service",
        help="run this node as a systemd service (restarts on failure, starts at boot)",
        description="Install, inspect or remove a systemd unit that runs this node (`aifactory up`, or "
        "`aifactory worker` when SYSTEM_ROLE=worker) in the current directory, with its .env. It restarts "
        "on failure, waits ENGINE_STOP_TIMEOUT_SEC + 60 s at stop for the trainer's checkpoint, and logs "
        "to journald. A system unit needs root; --user installs one for your user.",
    )
    svc_sub = svc.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    for name, text in (
        ("install", "write the unit, enable it at boot and start it"),
        ("status", "systemctl status of the unit"),
        ("uninstall", "stop, disable and remove the unit"),
        ("unit", "print the unit file without installing it"),
    ):
        action = svc_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("--user", action="store_true", help="a user unit (~/.config/systemd/user)")
        if name in ("install", "uninstall"):
            action.add_argument("--unit-dir", type=Path, help="write the unit here instead (no systemctl)")
        if name == "install":
            action.add_argument("--no-enable", action="store_true", help="write the unit only")
        action.set_defaults(func=cmd_service)

    backup = sub.add_parser(
        "backup",
        help="a consistent backup of the database and the data directory, while the factory runs",
        description="Copy the database (SQLite online backup; pg_dump for PostgreSQL) and what it points at "
        "in DATA_DIR (tokenizers, dataset manifests and shards, checkpoint pointers and folders, model "
        "versions) into DIR, with backup.json listing every file's size and sha256. Safe while a dataset "
        "build or a checkpoint save runs: it copies what they have committed.",
    )
    backup.add_argument(
        "directory", nargs="?", type=Path, metavar="DIR", help="default: backups/backup_YYYYmmdd_HHMMSS"
    )
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore",
        help="restore a backup into an empty DATA_DIR and database",
        description="Check every file of the backup in DIR against backup.json (a damaged file is named and "
        "nothing is replaced), then restore it into DATA_DIR and DATABASE_URL, which must be empty. Stop "
        "the factory first.",
    )
    restore.add_argument("directory", type=Path, metavar="DIR", help="a folder written by `aifactory backup`")
    restore.add_argument("--force", action="store_true", help="replace a non-empty DATA_DIR and database")
    restore.set_defaults(func=cmd_restore)

    upd = sub.add_parser(
        "update",
        help="install a model version or check for an application update from a version.json",
        description="Read a version.json (docs/deploy.md#updates) from a distribution server: `update model` "
        "downloads the model files it lists, checks each sha256, and registers them as a new model version "
        "(--promote: and makes it production; `aifactory rollback` undoes it); `update app` reports "
        "whether a newer application exists and prints the exact upgrade steps.",
    )
    upd_sub = upd.add_subparsers(dest="update_command", metavar="WHAT", required=True)
    model = upd_sub.add_parser("model", help="download, verify and register a model version")
    model.add_argument("--from", dest="source", required=True, metavar="URL", help="the version.json")
    model.add_argument("--promote", action="store_true", help="make it production once registered")
    model.set_defaults(func=cmd_update)
    app = upd_sub.add_parser("app", help="is a newer application version out, and how to upgrade")
    app.add_argument("--from", dest="source", required=True, metavar="URL", help="the version.json")
    app.set_defaults(func=cmd_update)
