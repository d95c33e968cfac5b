"""`aifactory ingest --chat FILE...` and the watched folder DATA_DIR/chat-inbox.

Each file is read record by record: a record that is not JSON, not one of the three formats, or not a
valid conversation is counted with its line number and reason and the rest of the file goes on. A file
with no valid conversation at all (empty, or every record refused) is an error of its own, named with
what was wrong with its first records, so a wrong file is never taken for an ingested one.

A conversation's key is the file's name and the record's id (or, without one, its line): dropping an
edited copy of the same file in again replaces the conversations that changed (versioned like a
document whose page changed) and leaves the others as they are.

The inbox: files dropped into DATA_DIR/chat-inbox are ingested by the text engine and moved to
chat-inbox/done/, or to chat-inbox/failed/ with a FILE.error.txt beside them saying why.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aifactory.chat import store
from aifactory.chat.conversation import InvalidConversation, from_record, read_records, validate
from aifactory.db import counters
from aifactory.db import policies as policy_db
from aifactory.db.database import Database
from aifactory.settings import Settings

BATCH = 500
SHOWN_PROBLEMS = 20  # per file, on the terminal; all are counted
INBOX, DONE, FAILED = "chat-inbox", "done", "failed"
CHAT_SUFFIXES = (".jsonl", ".json")


class ChatFileError(Exception):
    """A conversation file that yields nothing to ingest; the message says why."""


@dataclass
class FileResult:
    path: str
    records: int = 0
    valid: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of invalid records
    error: str = ""  # the file as a whole yielded nothing

    def line(self) -> str:
        parts = [f"{self.records} records", f"{self.counts['chat.stored']} stored"]
        for name, label in (
            ("chat.replaced", "replaced (new version)"),
            ("chat.unchanged", "unchanged"),
            ("chat.duplicate", "duplicates"),
            ("chat.refused.policy", "refused by policy"),
        ):
            if self.counts[name]:
                parts.append(f"{self.counts[name]} {label}")
        if self.problems:
            parts.append(f"{len(self.problems)} invalid")
        return f"{self.path}: " + ", ".join(parts)


def ingest_file(
    settings: Settings, db: Database, path: Path, policies: list | None = None, name: str | None = None
) -> FileResult:
    """Ingest one conversation file; raises ChatFileError when it yields no valid conversation. `name`
    (default the file's name) keys its conversations: ingesting the same name again replaces them."""
    name = name or path.name
    result = FileResult(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ChatFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ChatFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    policies = policy_db.load(db) if policies is None else policies
    languages = settings.languages()
    pending: list[store.Keyed] = []

    def flush() -> None:
        result.counts.update(
            store.store(db, pending, policies, val_fraction=settings.chat_val_fraction, node_id=db.node_id)
        )
        pending.clear()

    for record in read_records(text):
        result.records += 1
        if record.error:
            result.problems.append((record.line, record.error))
            continue
        try:
            conversation = validate(
                from_record(record.value),
                max_chars=settings.chat_max_chars,
                max_turns=settings.chat_max_turns,
                languages=languages,
            )
        except InvalidConversation as exc:
            result.problems.append((record.line, str(exc)))
            continue
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:  # a shape no rule foresaw
            why = f"not a conversation: {type(exc).__name__}: {str(exc)[:200]}"
            result.problems.append((record.line, why))
            continue
        result.valid += 1
        record_key = f"id:{conversation.record_id}" if conversation.record_id else f"line:{record.line}"
        pending.append(store.Keyed(f"{name}#{record_key}", name, conversation))
        if len(pending) >= BATCH:
            flush()
    if pending:
        flush()
    result.counts["chat.invalid"] = len(result.problems)
    if result.problems:
        counters.add(db, {"chat.invalid": len(result.problems)})
    if result.records == 0:
        raise ChatFileError(f"{path}: empty: no conversation records (JSONL, one JSON object a line)")
    if result.valid == 0:
        first = "; ".join(f"line {line}: {reason}" for line, reason in result.problems[:3])
        raise ChatFileError(f"{path}: none of its {result.records} records is a valid conversation ({first})")
    return result


def ingest_files(settings: Settings, db: Database, paths: list[Path]) -> tuple[list[FileResult], list[str]]:
    """Ingest each file (folders: their .jsonl and .json files); returns the results and the errors
    of files that yielded nothing (the other files are ingested all the same)."""
    files: list[tuple[Path, str]] = []  # (file, the name that keys its conversations)
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in CHAT_SUFFIXES and p.is_file())
            # a/train.jsonl and b/train.jsonl are two files: keyed by their path inside the folder
            files += [(p, p.relative_to(path).as_posix()) for p in found]
        else:
            files.append((path, path.name))
    policies = policy_db.load(db)
    results, errors = [], []
    for path, name in files:
        try:
            results.append(ingest_file(settings, db, path, policies, name))
        except ChatFileError as exc:
            errors.append(str(exc))
    return results, errors


def render(results: list[FileResult], errors: list[str]) -> list[str]:
    lines = []
    for result in results:
        lines.append(result.line())
        for line, reason in result.problems[:SHOWN_PROBLEMS]:
            lines.append(f"    line {line}: {reason}")
        if len(result.problems) > SHOWN_PROBLEMS:
            lines.append(f"    ... and {len(result.problems) - SHOWN_PROBLEMS} more invalid records")
    lines += [f"error: {error}" for error in errors]
    return lines


def inbox_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / INBOX


def scan_inbox(settings: Settings, db: Database) -> list[FileResult]:
    """Ingest the files waiting in DATA_DIR/chat-inbox, then move each to done/ or failed/.

    A file still being written (modified in the last two seconds) waits for the next scan."""

    inbox = inbox_dir(settings)
    if not inbox.is_dir():
        return []
    results = []
    for path in sorted(inbox.iterdir()):
        if not path.is_file() or path.suffix.lower() not in CHAT_SUFFIXES or path.name.startswith("."):
            continue
        if time.time() - path.stat().st_mtime < 2.0:
            continue
        try:
            result = ingest_file(settings, db, path)
        except ChatFileError as exc:  # (a database error is not the file's: it waits for the next scan)
            target, report = inbox / FAILED, str(exc)
        else:
            results.append(result)
            target, report = inbox / DONE, "\n".join(render([result], [])) if result.problems else ""
        target.mkdir(exist_ok=True)
        destination = _free_name(target, path.name)
        if report:  # what was wrong, beside the file: failed/x.jsonl.error.txt, done/x.jsonl.report.txt
            suffix = ".error.txt" if target.name == FAILED else ".report.txt"
            destination.with_name(destination.name + suffix).write_text(report + "\n", encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):  # another node's text engine filed it first
            shutil.move(str(path), str(destination))
    return results


def _free_name(folder: Path, name: str) -> Path:
    """`name` in `folder`, or name.2, name.3 ... when an earlier file of that name was filed there."""
    candidate, number = folder / name, 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{name}.{number}"
    return candidate
