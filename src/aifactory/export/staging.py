"""Write an export under a temporary name and rename it into place: never a half-written file.

An output path that exists is an error, before any work and again at the rename: an export never
replaces a file or directory, not even one that appeared while it ran. The temporary name is
`.NAME.partial-PID` next to the output; what a killed export left behind is removed by the next export
to the same name once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from aifactory.export import ExportError


def check_free(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} already exists: choose another output path or remove it first")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out: Path) -> None:
    """Temporary outputs of earlier exports to `out` whose process is gone (killed midway)."""
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(f".{out.name}.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staging_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A temporary directory to fill; renamed to `out` when the block ends well, removed otherwise."""
    out = Path(out)
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    staging = _staging_name(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        for path in staging.rglob("*"):
            if path.is_file():
                _fsync(path)
        _fsync(staging)
        check_free(out)
        os.rename(staging, out)  # a directory renames only onto nothing or an empty directory
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(out: Path) -> Iterator[Path]:
    """A temporary file path to write; moved to `out` when the block ends well, removed otherwise."""
    out = Path(out)
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    staging = _staging_name(out)
    staging.unlink(missing_ok=True)
    try:
        yield staging
        _fsync(staging)
        try:
            os.link(staging, out)  # fails if `out` exists: a file that appeared meanwhile is kept
            staging.unlink()
        except FileExistsError:
            raise ExportError(f"{out} appeared while the export ran; the export was not written") from None
        except OSError:  # a file system without hard links
            check_free(out)
            os.replace(staging, out)
        _fsync(out.parent)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
