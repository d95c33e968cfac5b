"""Bytes to text: charset detection, and telling text from binary bodies that claim to be HTML."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
SNIFF_BYTES = 4096
DETECT_BYTES = 64 * 1024  # charset-normalizer on a sample: enough to decide, bounded in time
# Control characters other than tab, newline, form feed and carriage return never occur in text.
CONTROL = bytes(range(0, 9)) + b"\x0b" + bytes(range(14, 32))


def looks_binary(body: bytes) -> bool:
    """A NUL byte, or many control characters, early in the body: an image or archive, not a page.

    UTF-16/32 text has NULs too, so a body with a UTF-16/32 byte-order mark is not judged here."""
    sample = body[:SNIFF_BYTES]
    if not sample or sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(sample.count(byte) for byte in CONTROL)
    return controls > len(sample) * 0.05


def _known(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def decode_body(body: bytes, declared: str | None) -> tuple[str, str]:
    """(text, charset): byte-order mark, then the HTTP charset, then <meta charset> or the XML
    declaration, then UTF-8 if it decodes, then charset-normalizer's guess. Undecodable bytes become
    U+FFFD instead of failing: a page with a few bad bytes still yields its text."""
    for bom, name in BOMS:
        if body.startswith(bom):
            return body.decode(name, errors="replace"), name
    head = body[:SNIFF_BYTES]
    match = META_CHARSET.search(head) or XML_ENCODING.search(head)
    for candidate in (declared, match.group(1).decode("ascii") if match else None):
        charset = _known(candidate)
        if charset:
            return body.decode(charset, errors="replace"), charset
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best = from_bytes(body[:DETECT_BYTES]).best()
    charset = _known(best.encoding if best else None) or "utf-8"
    return body.decode(charset, errors="replace"), charset
