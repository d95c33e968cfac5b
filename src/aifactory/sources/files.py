"""Local files for `aifactory ingest`: .txt, .md, .html/.htm, .jsonl (a `text` field) and folders of
them, through the same pipeline as crawled pages (useful offline and for private documents)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """The files to ingest, folders walked in a stable order; hidden files are left alone."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and ingestible(child) and not any(p.startswith(".") for p in child.parts):
                    yield child
        else:
            yield path


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
    yield RawDocument(
        url=url,
        body=raw.decode("utf-8", errors="replace"),
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
