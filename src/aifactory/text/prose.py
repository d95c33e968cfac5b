"""What the quality statistics look at: the prose of a document, not its code, tables or navigation.

Documentation and manuals are among the best text on the web, and they are full of code blocks,
command lines, option tables and cross-reference links. Rules written for prose (word lengths,
stop words, repeated n-grams, sentence punctuation) misread all of that: `$ apt-get install foo`
repeated in ten examples looks like spam, a table of package names has no stop words. So every
line of a document gets a kind, and the rules look at the `prose` lines only; the stored text
keeps everything (the model must learn code too).

For HTML the kinds come from the extractor's tree (`mark_tree`): trafilatura marks code and tables,
and the page's links are marked before extraction (`mark_link`), so each line is tagged while the
tree is rendered to text, with marker characters that `parse_marked` reads and removes. Plain text
and Markdown are classified line by line (`classify_text`): fenced or indented code, table rows,
command lines. In both, prose lines that look like a command (a shell prompt, `>>>`) or like code
(mostly symbols) are moved to code, and short lines that are nothing but link text are navigation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml.etree import _Element

from aifactory.text.normalize import normalize_line

# Markers: a code or table line carries CODE_LINE / TABLE_LINE; link text and inline code are
# enclosed in a pair. Symbols of the Control Pictures block (printable, or trafilatura would drop
# them; never seen in real text), removed from the input first, so a page cannot fake them.
CODE_LINE = "\u2401"
TABLE_LINE = "\u2402"
LINK_OPEN, LINK_CLOSE = "\u2403", "\u2404"
INLINE_OPEN, INLINE_CLOSE = "\u2405", "\u2406"
MARKERS = CODE_LINE + TABLE_LINE + LINK_OPEN + LINK_CLOSE + INLINE_OPEN + INLINE_CLOSE
REMOVE_MARKERS = dict.fromkeys(map(ord, MARKERS))
_SPAN_MARKER = re.compile(f"([{LINK_OPEN}{LINK_CLOSE}{INLINE_OPEN}{INLINE_CLOSE}])")
INLINE_PARENTS = {"p", "head", "hi", "ref", "del", "item", "cell", "quote"}  # code inside them is inline
INLINE_TAGS = {"hi", "ref", "del", "code", "lb", "graphic"}  # trafilatura's elements inside a paragraph

PROSE, CODE, TABLE, NAVIGATION = "prose", "code", "table", "navigation"
NAV_LINK_SHARE = 0.8  # a line whose letters are this much link text is navigation...
NAV_MAX_CHARS = 200  # ...when it is no longer than this (a long, linked sentence is still prose)
CODE_SYMBOL_SHARE = 0.2  # prose has a few brackets and quotes; code is a fifth symbols or more

_SOURCE_BREAK = re.compile(r"\s*\n\s*")
_WIDE = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_BREAK = re.compile(f"(?<=[{_WIDE}])[ \\t]*\\n\\s*(?=[{_WIDE}])")
_PROMPT = re.compile(r"^\s*(?:\$|%|>>>|\.\.\.|In \[\d+\]:|[A-Z]:\\[^ ]*>|PS [^ ]*>|sudo)\s")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TABLE_ROW = re.compile(r"^\s*(\|.*\||\+[-=+]+\+|[-|: ]*\|[-|: ]*-[-|: ]*)\s*$")
_CODE_SYMBOLS = re.compile(r"[{}\[\]()<>=;$@\\|&^~`*/#%_+:\"']")
_CONTINUATION = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff、，(（]")  # Japanese goes on without a capital
_BLOCK_START = re.compile(r"^\s*(?:[-*+•·]\s|\d+[.)]\s|#{1,6}\s|>)")  # a list item, heading or quote
_ALNUM_RUN = re.compile(r"[^\W_]+")
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")


@dataclass(frozen=True)
class Line:
    text: str  # without markers, link text and inline code included
    kind: str  # PROSE, CODE, TABLE or NAVIGATION
    link_chars: int = 0  # letters and digits of link text in the line
    prose_text: str | None = None  # the text the statistics see, inline code left out (None: `text`)

    @property
    def words_text(self) -> str:
        return self.text if self.prose_text is None else self.prose_text


@dataclass(frozen=True)
class Prose:
    """A document's lines with their kinds; the rules read `of_kind(PROSE)`."""

    lines: tuple[Line, ...]

    def of_kind(self, kind: str) -> list[Line]:
        return [line for line in self.lines if line.kind == kind]

    def prose_lines(self) -> list[str]:
        return [line.words_text for line in self.lines if line.kind == PROSE]

    def chars(self, kind: str | None = None) -> int:
        return sum(len(line.text) for line in self.lines if kind is None or line.kind == kind)

    def link_share(self) -> float:
        """Share of the letters and digits of prose and navigation lines that are link text (a link
        list is mostly links; separators such as | and » do not count either way)."""
        texts = [line for line in self.lines if line.kind in (PROSE, NAVIGATION)]
        chars = sum(alnum_count(line.text) for line in texts)
        return sum(line.link_chars for line in texts) / chars if chars else 0.0


# --- HTML: the extractor's tree ---------------------------------------------------------------------


def mark_tree(body: _Element) -> None:
    """Put the line markers into trafilatura's output tree (before it is rendered to text).

    Line breaks of the page's source inside prose are only whitespace (a browser shows a space), so
    they become spaces here: a paragraph is one line, as the line rules expect, and as it should be
    stored. Code keeps its lines."""
    in_code = {node for code in body.iter("code") for node in code.iter()}
    for node in body.iter():
        if node not in in_code and node.text and "\n" in node.text:
            node.text = _join_source_lines(node.text)
        # the tail of an inline element is prose of its paragraph; after a block it separates blocks
        inline = node.tag in INLINE_TAGS and (node.tag != "code" or not _is_multiline(node))
        if inline and node.tail and "\n" in node.tail and node.getparent() not in in_code:
            node.tail = _join_source_lines(node.tail)
    for element in body.iter("code"):
        parent = element.getparent()
        inline = parent is not None and parent.tag in INLINE_PARENTS and not _is_multiline(element)
        if inline:
            _enclose(element, INLINE_OPEN, INLINE_CLOSE)
        else:
            _mark_lines(element, CODE_LINE)
    for element in body.iter("table"):
        _mark_lines(element, TABLE_LINE)


def mark_link(element: _Element) -> None:
    """Enclose the text of a link (<a> of the page, before extraction) in the link markers."""
    if element.text or len(element):
        _enclose(element, LINK_OPEN, LINK_CLOSE)


def _join_source_lines(text: str) -> str:
    """A line break of the source is a space, except between two Japanese or Chinese characters,
    where it is nothing (CSS Text's segment break rule: those scripts put no space between words)."""
    return _SOURCE_BREAK.sub(" ", _CJK_BREAK.sub("", text))


def _is_multiline(element: _Element) -> bool:
    """Code of several lines (the source's indentation around an inline word does not count)."""
    return "\n" in "".join(element.itertext()).strip()


def _mark_lines(element: _Element, marker: str) -> None:
    """Every line of the element's text (its descendants' too, not its own tail) gets the marker at its
    end, where it cannot disturb the indentation that `normalize_line` keeps."""
    nodes: list[tuple[_Element, str]] = []
    for node in element.iter():
        if node.text:
            nodes.append((node, "text"))
        if node is not element and node.tail:
            nodes.append((node, "tail"))
    for node, attribute in nodes:
        value = getattr(node, attribute)
        setattr(node, attribute, value.replace("\n", marker + "\n"))
    if nodes:
        node, attribute = nodes[-1]
        setattr(node, attribute, getattr(node, attribute) + marker)
    else:
        element.text = marker


def _enclose(element: _Element, opening: str, closing: str) -> None:
    element.text = opening + (element.text or "")
    last = element
    while len(last):
        last = last[-1]
    if last is element:
        element.text += closing
    else:
        last.tail = (last.tail or "") + closing


def parse_marked(marked: str) -> tuple[str, Prose]:
    """(the clean text, its lines with kinds) from text rendered from a marked tree."""
    out: list[str] = []
    lines: list[Line] = []
    for raw in marked.split("\n"):
        kind = TABLE if TABLE_LINE in raw else CODE if CODE_LINE in raw else PROSE
        if not _SPAN_MARKER.search(raw):
            text = normalize_line(raw.translate(REMOVE_MARKERS)) if kind != PROSE else raw.strip()
            out.append(text)
            if text:
                lines.append(_line(text, kind, 0, None))
            continue
        link_chars = 0
        in_link = in_inline = had_inline = False  # a paragraph is one line: no span goes on to the next
        prose_pieces = []
        for piece in _SPAN_MARKER.split(raw):
            if piece == LINK_OPEN:
                in_link = True
            elif piece == LINK_CLOSE:
                in_link = False
            elif piece == INLINE_OPEN:
                in_inline = had_inline = True
            elif piece == INLINE_CLOSE:
                in_inline = False
            else:
                piece = piece.translate(REMOVE_MARKERS)
                if in_link:
                    link_chars += alnum_count(piece)
                if not in_inline:
                    prose_pieces.append(piece)
        text = normalize_line(raw.translate(REMOVE_MARKERS))
        text = text if kind != PROSE else text.strip()
        out.append(text)
        if not text:
            continue
        prose_text = " ".join("".join(prose_pieces).split()) if had_inline else None
        if prose_text is not None and not any(ch.isalnum() for ch in prose_text):
            kind = CODE  # a line of inline code only (`apt-get update` as a list item)
        lines.append(_line(text, kind, link_chars, prose_text))
    return "\n".join(out).strip("\n"), Prose(tuple(lines))


# --- plain text and Markdown --------------------------------------------------------------------------


def classify_text(text: str) -> Prose:
    """Kinds for the lines of a text without a tree: Markdown fences and indented blocks are code,
    `| a | b |` rows are tables; prose lines then go through the same checks as HTML's. A line that
    continues the sentence of the line before (no full stop there, and it starts in lower case or in
    Japanese) is joined to it, as a paragraph is one line in HTML: a text wrapped at 72 columns has
    sentences, not lines, that end in a full stop."""
    lines: list[Line] = []
    paragraph: list[str] = []
    in_fence = False
    previous_blank = True
    in_indented = False

    def end_paragraph() -> None:
        if paragraph:
            joined = " ".join(part.strip() for part in paragraph)
            link_chars = sum(alnum_count(m.group(1)) for m in _MARKDOWN_LINK.finditer(joined))
            visible = _MARKDOWN_LINK.sub(r"\1", joined) if link_chars else joined  # [text](url) reads "text"
            lines.append(_line(visible, PROSE, link_chars, None))
            paragraph.clear()

    for raw in text.split("\n"):
        if _FENCE.match(raw):
            end_paragraph()
            in_fence = not in_fence
            lines.append(Line(raw, CODE))
            previous_blank = False
            continue
        if not raw.strip():
            end_paragraph()
            previous_blank = True
            in_indented = False
            continue
        indented = raw.startswith(("    ", "\t"))
        if in_fence or (indented and (previous_blank or in_indented)):
            end_paragraph()
            in_indented = not in_fence
            lines.append(Line(raw, CODE))
        else:
            if paragraph and not _continues(paragraph[-1], raw):
                end_paragraph()
            if _BLOCK_START.match(raw) or _TABLE_ROW.match(raw.strip()) or looks_like_command(raw.strip()):
                end_paragraph()
            paragraph.append(raw)
            if _TABLE_ROW.match(raw.strip()) or looks_like_command(raw.strip()):
                end_paragraph()
        previous_blank = False
    end_paragraph()
    return Prose(tuple(lines))


def _continues(previous: str, line: str) -> bool:
    """Whether `line` goes on with the sentence `previous` broke off (a hard-wrapped paragraph)."""
    end = previous.rstrip()[-1:]
    if not end or end in ".!?。！？」』:;":
        return False
    first = line.lstrip()[:1]
    return first.islower() or _CONTINUATION.match(first) is not None


# --- shared: lines that are not prose although nothing marked them -----------------------------------


def _line(text: str, kind: str, link_chars: int, prose_text: str | None) -> Line:
    if kind != PROSE:
        return Line(text, kind)
    stripped = text.strip()
    if _TABLE_ROW.match(stripped):
        return Line(text, TABLE)
    if looks_like_command(stripped):
        return Line(text, CODE)
    if link_chars and len(stripped) <= NAV_MAX_CHARS and link_chars >= NAV_LINK_SHARE * alnum_count(stripped):
        return Line(text, NAVIGATION, link_chars)
    return Line(text, PROSE, link_chars, prose_text)


def alnum_count(text: str) -> int:
    return sum(map(len, _ALNUM_RUN.findall(text)))


def looks_like_command(line: str) -> bool:
    """A shell or REPL prompt, or a line that is mostly code symbols (`x = f(a[1]);`)."""
    if _PROMPT.match(line):
        return True
    if len(line) < 8:
        return False
    return len(_CODE_SYMBOLS.findall(line)) >= CODE_SYMBOL_SHARE * (len(line) - line.count(" "))
