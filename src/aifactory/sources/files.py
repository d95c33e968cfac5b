"""Local files for `aifactory ingest`: .txt, .md, .html/.htm, .jsonl (a `text` field) and folders of
them, through the same pipeline as crawled pages (useful offline and for private documents)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aifactory.collect.decode import decode_body
from aifactory.sources.wikidump import iter_dump
from aifactory.text.pipeline import RawDocument

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
}
DUMP_SUFFIXES = (".xml", ".xml.bz2", ".xml.gz")
MAX_FILE_BYTES = 50_000_000


class SkippedFile(Exception):
    """A file that cannot be ingested; the message says why."""


def ingestible(path: Path) -> bool:
    name = path.name.lower()
    return path.suffix.lower() in CONTENT_TYPES or name.endswith(".jsonl") or name.endswith(DUMP_SUFFIXES)


def iter_paths(paths: list[Path], passed_over: Counter[str] | None = None) -> Iterator[Path]:
    """The files to ingest, folders walked in a stable order.

    Inside a folder given, hidden names (a file or folder starting with ".") and files of types that
    cannot be ingested are passed over and counted in `passed_over` ("hidden", ".pdf", ...). Only the
    names below the folder given count: `../notes` or a folder inside `~/.cache` is walked as asked."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        for child in sorted(path.rglob("*")):
            if not child.is_file():
                continue
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                reason = "hidden"
            elif not ingestible(child):
                reason = child.suffix.lower() or "no extension"
            else:
                yield child
                continue
            if passed_over is not None:
                passed_over[reason] += 1


def read_file(path: Path) -> Iterator[RawDocument]:
    """Raw documents from one file; raises SkippedFile for what cannot be read."""
    if not path.exists():
        raise SkippedFile(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(DUMP_SUFFIXES):
        yield from iter_dump(path)
        return
    if path.stat().st_size > MAX_FILE_BYTES and not name.endswith(".jsonl"):
        raise SkippedFile(f"{path}: larger than {MAX_FILE_BYTES // 1_000_000} MB")
    url = path.resolve().as_uri()
    if name.endswith(".jsonl"):
        yield from _read_jsonl(path, url)
        return
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise SkippedFile(f"{path}: unsupported file type (use .txt, .md, .html, .jsonl or a wiki dump)")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise SkippedFile(f"{path}: binary file")
    # Like a fetched page: a byte-order mark or a declared <meta charset> decides, else UTF-8 when the
    # file is valid UTF-8, else the legacy encodings (a Shift_JIS page saved years ago still reads).
    body, _encoding = decode_body(raw, None)
    yield RawDocument(
        url=url,
        body=body,
        content_type=content_type,
        source="local",
        title=path.stem if content_type == "text/plain" else "",
    )


def _read_jsonl(path: Path, url: str) -> Iterator[RawDocument]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise SkippedFile(f"{path}:{number}: not valid JSON") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                continue
            doc_url = record.get("url") if isinstance(record.get("url"), str) else f"{url}#line-{number}"
            yield RawDocument(
                url=doc_url,
                body=text,
                content_type="text/plain",
                source="local",
                title=str(record.get("title") or ""),
            )
