"""Bytes to text, as a browser decodes them: charset labels, legacy Japanese encodings, binary bodies.

Charset labels are resolved as the WHATWG Encoding Standard says browsers resolve them, not as Python's
codec registry would: `iso-8859-1`, `latin1` and `ascii` mean windows-1252 (a page labelled Latin-1
that uses curly quotes or € really is windows-1252), `shift_jis` means Windows-31J (cp932, with the NEC
and IBM extensions: ①, ㈱, 髙 are ordinary characters on Japanese pages), `euc-jp` decodes its JIS X 0208
rows with the same extended table, `gb2312`/`gbk` mean GB18030, `euc-kr` means windows-949. Only the
labels of the encodings a crawler meets in practice are listed; other labels fall back to Python's
registry. A label the standard names but Python lacks, or an unknown one, is ignored (sniffing decides).
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16le"),
    (codecs.BOM_UTF16_BE, "utf-16be"),
)
META_CHARSET = re.compile(
    rb"""<meta[^>]{0,500}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE
)
XML_ENCODING = re.compile(rb"""<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)
SNIFF_BYTES = 4096
DETECT_BYTES = 64 * 1024  # charset-normalizer on a sample: enough to decide, bounded in time
# Control characters other than tab, newline, form feed and carriage return never occur in text.
CONTROL = bytes(range(0, 9)) + b"\x0b" + bytes(range(14, 32))

# WHATWG encoding name -> (labels, the Python codec that decodes it as browsers do).
_ENCODINGS: dict[str, tuple[str, str]] = {
    "utf-8": ("unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8", "utf-8"),
    "windows-1252": (
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
        "iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
        "cp1252",
    ),
    "shift_jis": (
        "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis cp932",
        "cp932",
    ),
    "euc-jp": ("cseucpkdfmtjapanese euc-jp x-euc-jp eucjp", "euc_jp"),
    "iso-2022-jp": ("csiso2022jp iso-2022-jp iso2022jp", "iso2022_jp_ext"),
    "gb18030": (
        "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030",
        "gb18030",
    ),
    "big5": ("big5 big5-hkscs cn-big5 csbig5 x-x-big5", "big5hkscs"),
    "euc-kr": (
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
        "ksc_5601 windows-949 cp949",
        "cp949",
    ),
    "windows-1254": (
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 "
        "latin5 windows-1254 x-cp1254",
        "cp1254",
    ),
    "windows-874": ("dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874", "cp874"),
    "utf-16le": ("csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le", "utf-16-le"),
    "utf-16be": ("unicodefffe utf-16be", "utf-16-be"),
}
LABELS = {label: name for name, (labels, _) in _ENCODINGS.items() for label in labels.split()}
CODECS = {name: codec for name, (_, codec) in _ENCODINGS.items()}


def looks_binary(body: bytes) -> bool:
    """A NUL byte, or many control characters, early in the body: an image or archive, not a page.

    UTF-16 text has NULs too, so a body with a UTF-16 byte-order mark is not judged here."""
    sample = body[:SNIFF_BYTES]
    if not sample or sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(sample.count(byte) for byte in CONTROL)
    return controls > len(sample) * 0.05


def encoding_for_label(label: str | None) -> str | None:
    """The encoding a charset label names (WHATWG name where the standard has one), or None."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in LABELS:
        return LABELS[label]
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    # Python's own names for the same encodings (charset-normalizer answers with these).
    return LABELS.get(name.replace("_", "-"), LABELS.get(name, name))


def _jis_via_cp932(error: UnicodeDecodeError) -> tuple[str, int]:
    """EUC-JP bytes Python's euc_jp refuses: a JIS X 0208 code point from the extended rows (NEC row 13,
    NEC-selected IBM extensions) that browsers decode with the Windows-31J table. Decode that pair by
    moving it to Shift_JIS and reading it as cp932; anything else becomes U+FFFD."""
    data, start = error.object, error.start
    lead = data[start]
    trail = data[start + 1] if start + 1 < len(data) else 0
    if 0xA1 <= lead <= 0xFE and 0xA1 <= trail <= 0xFE:
        row, cell = lead - 0xA1, trail - 0xA1  # 0-based JIS row and cell
        sjis_lead = (row >> 1) + (0x81 if row < 62 else 0xC1)
        sjis_trail = cell + (0x40 if row % 2 == 0 else 0x9F)
        if row % 2 == 0 and sjis_trail >= 0x7F:
            sjis_trail += 1
        try:
            return bytes((sjis_lead, sjis_trail)).decode("cp932"), start + 2
        except UnicodeDecodeError:
            pass
    return "\ufffd", start + 1


codecs.register_error("aifactory-euc-jp", _jis_via_cp932)


def decode_as(body: bytes, encoding: str) -> str:
    """`body` decoded as `encoding` (a name from encoding_for_label); bad bytes become U+FFFD."""
    codec = CODECS.get(encoding, encoding)
    errors = "aifactory-euc-jp" if codec == "euc_jp" else "replace"
    return body.decode(codec, errors=errors)


def decode_body(body: bytes, declared: str | None) -> tuple[str, str]:
    """(text, encoding): byte-order mark, then the HTTP charset, then <meta charset> or the XML
    declaration, then UTF-8 if it decodes, then charset-normalizer's guess. Undecodable bytes become
    U+FFFD instead of failing: a page with a few bad bytes still yields its text."""
    for bom, name in BOMS:
        if body.startswith(bom):
            return decode_as(body[len(bom) :], name), name
    encoding = encoding_for_label(declared)
    if encoding is None:
        head = body[:SNIFF_BYTES]
        match = META_CHARSET.search(head) or XML_ENCODING.search(head)
        encoding = encoding_for_label(match.group(1).decode("ascii")) if match else None
        if encoding in ("utf-16le", "utf-16be"):
            encoding = "utf-8"  # a <meta> that could be read as ASCII is not UTF-16 (WHATWG prescan)
    if encoding is not None:
        return decode_as(body, encoding), encoding
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best = from_bytes(body[:DETECT_BYTES]).best()
    encoding = encoding_for_label(best.encoding if best else None)
    if encoding is not None:
        return decode_as(body, encoding), encoding
    # The detector gave up (it does on Windows-31J pages that use the NEC/IBM extensions): the legacy
    # Japanese encodings if the body is valid in one of them, else windows-1252, as a browser would.
    for fallback in ("shift_jis", "euc-jp"):
        text = decode_as(body, fallback)
        if "\ufffd" not in text:
            return text, fallback
    return decode_as(body, "windows-1252"), "windows-1252"
