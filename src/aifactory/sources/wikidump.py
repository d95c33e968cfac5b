"""Import of a Wikipedia `pages-articles` XML dump (plain or .bz2), streamed in constant memory.

The dump is read element by element (`iterparse`) and each page is cleared once handled, so a
20 GB dump needs as little memory as a small one. Markup is removed with mwparserfromhell:
templates, references, tables and file/category links go; link texts stay.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote

import mwparserfromhell

from aifactory.text.pipeline import RawDocument

# Link namespaces whose "text" is not prose (English and Japanese names, and the canonical ones).
NON_TEXT_LINKS = re.compile(
    r"^\s*:?\s*(file|image|media|category|ファイル|画像|カテゴリ|wikipedia|template|help|portal)\s*:",
    re.IGNORECASE,
)
SECTION_NOISE = re.compile(
    r"^=+\s*(references|external links|see also|notes|脚注|参考文献|関連項目|外部リンク)\s*=+$",
    re.IGNORECASE | re.MULTILINE,
)
NON_TEXT_TAGS = ("ref", "references", "table", "gallery", "math", "score", "syntaxhighlight")


def open_dump(path: Path) -> IO[bytes]:
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def wikitext_to_text(wikitext: str) -> str:
    """Plain prose from wikitext."""
    # The reference sections at the end are lists of sources, not prose: cut the wikitext there.
    wikitext = SECTION_NOISE.split(wikitext, maxsplit=1)[0]
    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks(recursive=False):
        if NON_TEXT_LINKS.match(str(link.title)):
            with contextlib.suppress(ValueError):  # already gone with an enclosing node
                code.remove(link)
    for tag in code.filter_tags(recursive=False):
        if str(tag.tag).lower() in NON_TEXT_TAGS:
            with contextlib.suppress(ValueError):
                code.remove(tag)
    text = code.strip_code(normalize=True, collapse=True)
    lines = [line.strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line and not line.startswith(("|", "{|", "!")))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def iter_dump(path: Path, language: str = "") -> Iterator[RawDocument]:
    """Articles (namespace 0, not redirects) of the dump as raw documents."""
    language = language or _guess_language(path)
    host = f"{language}.wikipedia.org" if language else "wikipedia.org"
    with open_dump(path) as stream:
        root: ET.Element | None = None
        for event, element in ET.iterparse(stream, events=("start", "end")):
            if root is None:
                root = element  # <mediawiki>: every page is its child until removed
            if event != "end" or _local(element.tag) != "page":
                continue
            fields = {_local(child.tag): child for child in element}
            title = (fields["title"].text or "") if "title" in fields else ""
            namespace = (fields["ns"].text or "0") if "ns" in fields else "0"
            revision = fields.get("revision")
            wikitext = ""
            if revision is not None:
                for child in revision:
                    if _local(child.tag) == "text":
                        wikitext = child.text or ""
            # Constant memory: clearing the page is not enough, the emptied element would stay attached
            # to the root (20 GB of dump = millions of them); drop everything the root holds so far.
            root.clear()
            if namespace != "0" or "redirect" in fields or wikitext.lstrip().lower().startswith("#redirect"):
                continue
            text = wikitext_to_text(wikitext)
            if not text:
                continue
            url = f"https://{host}/wiki/{quote(title.replace(' ', '_'))}"
            yield RawDocument(
                url=url,
                body=f"{title}\n\n{text}",
                content_type="text/plain",
                source="wikipedia",
                title=title,
                license_hint="cc-by-sa-4.0",
            )


def _guess_language(path: Path) -> str:
    """`jawiki-20240101-pages-articles.xml.bz2` → `ja`."""
    match = re.match(r"([a-z\-]+?)wiki-", path.name)
    return match.group(1) if match else ""
