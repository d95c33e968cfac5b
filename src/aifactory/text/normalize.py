"""Text normalisation applied to every document before anything measures or stores it.

NFC keeps every character's meaning; on top of it only the compatibility mappings that are pure
noise for a language model are applied: full-width ASCII (ＡＢＣ１２３ → ABC123, common in Japanese
pages), the ideographic space, zero-width characters and control characters. Whitespace is collapsed
inside lines and runs of blank lines shrink to one, so paragraph boundaries survive. A line's leading
indentation is kept: in code it is part of the meaning (Python blocks, YAML, nested lists).
"""

from __future__ import annotations

import re
import unicodedata

# Full-width ASCII variants U+FF01..U+FF5E map to U+0021..U+007E; U+3000 is the ideographic space.
_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_INVISIBLE = dict.fromkeys([0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD])
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f]+")
_INDENT = re.compile(r"[ \t]*")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_WIDTH).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return _BLANK_LINES.sub("\n\n", "\n".join(map(normalize_line, text.split("\n")))).strip("\n")


def normalize_line(line: str) -> str:
    """One line: inner runs of whitespace become one space, trailing whitespace goes, the leading
    indentation stays (a line of whitespace only becomes empty)."""
    indent = _INDENT.match(line).end()  # type: ignore[union-attr]  # the pattern matches every string
    body = _SPACES.sub(" ", line[indent:]).rstrip()
    return line[:indent] + body if body else ""


def split_long(text: str, max_chars: int) -> list[str]:
    """Split a long document at paragraph (then line) boundaries into parts of at most ~max_chars.

    Long documents are valuable (books, manuals, long articles); they are split, never dropped."""
    if len(text) <= max_chars:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for block in re.split(r"(\n\n|\n)", text):
        if size + len(block) > max_chars and current:
            parts.append("".join(current).strip())
            current, size = [], 0
        while len(block) > max_chars:  # a single giant paragraph: cut it at a space if possible
            cut = block.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            parts.append(block[:cut].strip())
            block = block[cut:]
        current.append(block)
        size += len(block)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return [part for part in parts if part]
