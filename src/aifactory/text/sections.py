"""Where a document's section headings are, kept beside its text.

The stored text is plain text: the quality rules and the tokenizer see it exactly as before, and a
heading is just one of its lines. What is kept besides is which lines are headings: `[[offset, level,
heading], ...]` (the character offset where the heading's line starts), so the synthetic conversations
of chat tuning can answer "how do I ...?" with the section under a heading.

Headings come from the extractor's tree for HTML (trafilatura renders <h1>..<h6> as <head rend="hN">)
and from `#` lines for Markdown; they are then looked up, in order, among the lines of each part of the
text as stored (after splitting and PII masking), so the offsets are always offsets into `text`.
"""

from __future__ import annotations

import re

from lxml.etree import _Element

MAX_HEADING_CHARS = 200
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_LINE = re.compile(r"[^\n]*\n?")

Headings = tuple[tuple[int, str], ...]  # (level, heading text), in document order
Sections = list[list]  # [[offset, level, heading], ...]


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def tree_headings(body: _Element) -> Headings:
    """The headings of trafilatura's output tree, before it is rendered to text."""
    found = []
    for head in body.iter("head"):
        text = " ".join(" ".join(head.itertext()).split())
        rend = str(head.get("rend") or "")
        level = int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1].isdigit() else 2
        if text and len(text) <= MAX_HEADING_CHARS:
            found.append((level, text))
    return tuple(found)


def markdown_headings(text: str) -> Headings:
    found = []
    for line in text.splitlines():
        match = _MARKDOWN_HEADING.match(line.strip())
        if match and len(match.group(2)) <= MAX_HEADING_CHARS:
            found.append((len(match.group(1)), match.group(2)))
    return tuple(found)


def section_offsets(text: str, headings: Headings) -> Sections:
    """The headings found, in order, as whole lines of `text` (a Markdown line may keep its #s). A
    part of a long document holds only some of them: each line is looked up among the headings not
    matched yet, so a part that starts at the twentieth heading finds it."""
    if not headings:
        return []
    where: dict[str, list[int]] = {}
    for number, (_, heading) in enumerate(headings):
        where.setdefault(_fold(heading), []).append(number)
    out: Sections = []
    wanted = 0
    offset = 0
    for match in _LINE.finditer(text):
        line = match.group(0)
        if not line:
            break
        stripped = line.strip()
        if stripped.startswith("#"):
            stripped = stripped.lstrip("#").strip()
        later = [n for n in where.get(_fold(stripped), ()) if n >= wanted] if stripped else []
        if later:
            level, heading = headings[later[0]]
            out.append([offset, level, heading])
            wanted = later[0] + 1
        offset += len(line)
    return out


def section_texts(text: str, sections: Sections) -> list[tuple[int, str, str]]:
    """(level, heading, body) of each section: the text after the heading's line up to the next
    heading of any level."""
    out = []
    for number, (offset, level, heading) in enumerate(sections):
        start = text.find("\n", offset)
        if start < 0:
            continue
        end = sections[number + 1][0] if number + 1 < len(sections) else len(text)
        out.append((int(level), str(heading), text[start + 1 : end].strip()))
    return out
