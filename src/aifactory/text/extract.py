"""Main-text extraction: the article, not the navigation, ads, cookie banners or comments.

HTML goes through trafilatura in precision mode (the FineWeb setting): main content only, no
comments. Preformatted blocks are kept as code with their line breaks and indentation, and every line
of the result is tagged prose, code, table or navigation (`aifactory.text.prose`) for the quality
rules. Title and publication date come from the page's head (<title>, Open Graph, <meta> dates,
<time>), a lookup that costs a fraction of trafilatura's metadata search (which doubled the cost of
extraction). Plain text and Markdown pass through normalised. Extraction runs under a time limit, so
an adversarial page (deep nesting, megabyte lines) costs a bounded amount of CPU and is then counted
as rejected.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import threading
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass

import trafilatura
from lxml import etree
from lxml.html import HtmlElement
from trafilatura.settings import use_config
from trafilatura.utils import load_html
from trafilatura.xml import xmltotxt

from aifactory.text.normalize import normalize_text
from aifactory.text.prose import REMOVE_MARKERS, Prose, mark_link, mark_tree, parse_marked
from aifactory.text.sections import Headings, markdown_headings, tree_headings

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")
MAX_TREE_SIZE = 50_000  # elements; bigger trees are generated junk, not articles
INLINE_TAGS = frozenset(
    "a abbr b bdi bdo br cite code data dfn em font i img kbd mark q s samp small span strong sub sup "
    "time tt u var wbr".split()
)


REARM_SEC = 0.05  # once expired, the alarm fires again this often until the limited block ends


class ExtractionTimeout(BaseException):
    """The time limit ran out. A BaseException (like KeyboardInterrupt), so the broad `except Exception`
    handlers inside trafilatura and lxml cannot swallow it; `time_limit` re-raises it until the limited
    block has ended, and raises it at the end of the block if it was swallowed all the same."""


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TITLE_PATHS = ('//meta[@property="og:title"]/@content', "//head/title//text()", "//h1//text()")
_DATE_PATHS = (
    '//meta[@property="article:published_time" or @property="og:published_time"]/@content',
    '//meta[@itemprop="datePublished"]/@content',
    "//meta[translate(@name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    " = 'date' or translate(@name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    " = 'dc.date' or translate(@name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    " = 'dcterms.created' or translate(@name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    " = 'dc.date.issued' or @name = 'pubdate' or @name = 'publishdate']/@content",
    "//time[@datetime][1]/@datetime",
)
_JSON_LD_DATE = re.compile(r'"datePublished"\s*:\s*"(\d{4}-\d{2}-\d{2})')


@dataclass(frozen=True)
class Extracted:
    text: str
    title: str = ""
    date: str | None = None
    prose: Prose | None = None  # the lines with their kinds (HTML); None: classify the text's lines
    marked: str = ""  # the text with the line markers (HTML), for documents split into parts
    headings: Headings = ()  # the section headings, in order (text/sections.py)


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
    tree = load_html(html.translate(REMOVE_MARKERS))
    if tree is None:
        return None
    title, date = _title_and_date(tree)
    _prepare_tree(tree)
    document = trafilatura.bare_extraction(
        tree,
        url=url,
        favor_precision=True,
        include_comments=False,
        include_tables=True,
        # No trafilatura dedup: its cache is per process and history-dependent (a page seen twice
        # would vanish as 'no text'); duplicates are the pipeline's persistent dedup's job.
        deduplicate=False,
        with_metadata=False,
        config=_config(),
    )
    body = getattr(document, "body", None)
    if body is None or not getattr(document, "text", None):
        return None
    headings = tree_headings(body)
    mark_tree(body)
    marked = normalize_text(xmltotxt(body, include_formatting=False))
    text, prose = parse_marked(marked)
    if not text.strip():
        return None
    return Extracted(text=text, title=title, date=date, prose=prose, marked=marked, headings=headings)


def _prepare_tree(tree: HtmlElement) -> None:
    """Two repairs and a marking before trafilatura reads the page.

    Link text is enclosed in markers (`aifactory.text.prose`), so the quality rules know how much of
    the page is links without trafilatura's link output (which resolves every URL, at a cost).

    A <div> that holds text and only inline elements is a paragraph (DocBook and many CMSs write
    <div class="para">): trafilatura otherwise drops the text before its first inline child, and a
    manual's sentences come out as fragments that start at a <code>.

    <pre> blocks become code with their line breaks: trafilatura keeps whitespace in code, but takes
    a <pre> for code only by some markers, and otherwise joins its lines into one (a Python example
    then reads `def f(x): for y in x: if y: return y`)."""
    for div in tree.iter("div"):
        if (div.text or "").strip() and all(child.tag in INLINE_TAGS for child in div):
            div.tag = "p"
    for pre in tree.iter("pre"):
        text = pre.text_content()
        for child in list(pre):
            pre.remove(child)
        pre.text = None
        etree.SubElement(pre, "span").text = text  # one <span> child: trafilatura's sign of code
    for link in tree.iter("a"):
        mark_link(link)


def _title_and_date(tree: HtmlElement) -> tuple[str, str | None]:
    title = ""
    for path in _TITLE_PATHS:
        found = " ".join(" ".join(str(part) for part in tree.xpath(path)[:20]).split())
        if found:
            title = normalize_text(found)[:500]
            break
    for path in _DATE_PATHS:
        for value in tree.xpath(path)[:5]:
            match = _ISO_DATE.match(str(value).strip())
            if match:
                return title, match.group(0)
    for script in tree.xpath('//script[@type="application/ld+json"]/text()')[:5]:
        match = _JSON_LD_DATE.search(str(script))
        if match:
            return title, match.group(1)
    return title, None


def extract_document(
    body: str, content_type: str, url: str | None = None, timeout: float = 10.0
) -> Extracted | None:
    """Main text of a fetched body by its content type; None when there is no text to keep."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in TEXT_TYPES or (not kind and not body.lstrip().startswith("<")):
        text = normalize_text(body)
        title = text.split("\n", 1)[0].lstrip("# ").strip()[:200] if kind != "text/plain" else ""
        headings = markdown_headings(text) if kind != "text/plain" else ()
        return Extracted(text=text, title=title, headings=headings) if text else None
    with time_limit(timeout):
        return extract_html(body, url)
