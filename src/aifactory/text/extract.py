"""Main-text extraction: the article, not the navigation, ads, cookie banners or comments.

HTML goes through trafilatura in precision mode (the FineWeb setting): main content only, no
comments, with title and publication date when the page has them. Plain
text and Markdown pass through normalised. Extraction runs under a time limit, so an adversarial
page (deep nesting, megabyte lines) costs a bounded amount of CPU and is then counted as rejected.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass

import trafilatura
from trafilatura.settings import use_config

from aifactory.text.normalize import normalize_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")
MAX_TREE_SIZE = 50_000  # elements; bigger trees are generated junk, not articles


REARM_SEC = 0.05  # once expired, the alarm fires again this often until the limited block ends


class ExtractionTimeout(BaseException):
    """The time limit ran out. A BaseException (like KeyboardInterrupt), so the broad `except Exception`
    handlers inside trafilatura and lxml cannot swallow it; `time_limit` re-raises it until the limited
    block has ended, and raises it at the end of the block if it was swallowed all the same."""


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str = ""
    date: str | None = None


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ExtractionTimeout after `seconds` of wall time (main thread of a process only)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    expired = False

    def expire(_signum: int, _frame: object) -> None:
        nonlocal expired
        expired = True
        signal.setitimer(signal.ITIMER_REAL, REARM_SEC)  # and again, should this one be swallowed
        raise ExtractionTimeout(f"extraction took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:  # the block caught every alarm and returned: its result is not to be trusted either
        raise ExtractionTimeout(f"extraction took longer than {seconds}s")


@functools.lru_cache(maxsize=1)
def _config() -> ConfigParser:
    config = use_config()
    config.set("DEFAULT", "MAX_TREE_SIZE", str(MAX_TREE_SIZE))
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")  # our own time limit applies (below)
    return config


def extract_html(html: str, url: str | None = None) -> Extracted | None:
    document = trafilatura.bare_extraction(
        html,
        url=url,
        favor_precision=True,
        include_comments=False,
        include_tables=True,
        # No trafilatura dedup: its cache is per process and history-dependent (a page seen twice
        # would vanish as 'no text'); duplicates are the pipeline's persistent dedup's job.
        deduplicate=False,
        with_metadata=True,
        config=_config(),
    )
    if document is None or not getattr(document, "text", None):
        return None
    text = normalize_text(document.text)
    if not text:
        return None
    return Extracted(text=text, title=normalize_text(document.title or "")[:500], date=document.date)


def extract_document(
    body: str, content_type: str, url: str | None = None, timeout: float = 10.0
) -> Extracted | None:
    """Main text of a fetched body by its content type; None when there is no text to keep."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in TEXT_TYPES or (not kind and not body.lstrip().startswith("<")):
        text = normalize_text(body)
        title = text.split("\n", 1)[0].lstrip("# ").strip()[:200] if kind != "text/plain" else ""
        return Extracted(text=text, title=title) if text else None
    with time_limit(timeout):
        return extract_html(body, url)
