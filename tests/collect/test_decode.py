"""Pages decode the way a browser decodes them (WHATWG Encoding Standard), legacy Japanese included."""

from __future__ import annotations

import pytest

from aifactory.collect.decode import decode_body, encoding_for_label

# Characters that plain Shift_JIS / EUC-JP / Latin-1 codecs get wrong: NEC row 13 (①, ㈱), an
# NEC-selected IBM extension kanji (髙), half-width katakana, and windows-1252's curly quotes and euro.
JAPANESE = "髙橋さんの①番目の会社は㈱です。「日本語」のテキスト、ｶﾀｶﾅも。"
WESTERN = "café “quoted” costs 5 € — naïve"


def to_euc_jp(text: str) -> bytes:
    """EUC-JP bytes of `text`, made from its Windows-31J bytes (JIS row/cell moved to EUC)."""
    sjis, out, i = text.encode("cp932"), bytearray(), 0
    while i < len(sjis):
        lead = sjis[i]
        if lead < 0x80:
            out.append(lead)
            i += 1
        elif 0xA1 <= lead <= 0xDF:
            out += bytes((0x8E, lead))
            i += 1
        else:
            trail = sjis[i + 1]
            row = 2 * (lead - (0x81 if lead < 0xA0 else 0xC1))
            if trail >= 0x9F:
                row, cell = row + 1, trail - 0x9F
            else:
                cell = trail - 0x40 - (trail > 0x7F)
            out += bytes((0xA1 + row, 0xA1 + cell))
            i += 2
    return bytes(out)


def page(body: str, head: str = "") -> str:
    return f"<html><head>{head}<title>t</title></head><body><p>{body}</p></body></html>"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("ISO-8859-1", "windows-1252"),
        ("latin1", "windows-1252"),
        ("US-ASCII", "windows-1252"),
        ("Shift_JIS", "shift_jis"),
        ("x-sjis", "shift_jis"),
        ("Windows-31J", "shift_jis"),
        ("EUC-JP", "euc-jp"),
        ("ISO-2022-JP", "iso-2022-jp"),
        ("gb2312", "gb18030"),
        ("euc-kr", "euc-kr"),
        ("utf8", "utf-8"),
        (" 'UTF-8' ", "utf-8"),
        ("koi8-r", "koi8-r"),  # not in our table: Python's registry still knows it
        ("no-such-charset", None),
        ("", None),
    ],
)
def test_charset_labels_mean_what_they_mean_to_a_browser(label: str, expected: str | None) -> None:
    assert encoding_for_label(label) == expected


def test_shift_jis_is_decoded_with_the_windows_extensions() -> None:
    body = page(JAPANESE).encode("cp932")
    text, encoding = decode_body(body, "Shift_JIS")
    assert JAPANESE in text and encoding == "shift_jis"
    assert "\ufffd" not in text


def test_euc_jp_rows_outside_jis_x_0208_decode_as_browsers_do() -> None:
    body = to_euc_jp(page(JAPANESE))
    text, encoding = decode_body(body, "euc-jp")
    assert JAPANESE in text and encoding == "euc-jp"


def test_iso_2022_jp_and_its_escape_sequences() -> None:
    plain = "日本語のテキストと ASCII の混在。"
    text, encoding = decode_body(page(plain).encode("iso2022_jp"), "iso-2022-jp")
    assert plain in text and encoding == "iso-2022-jp"


def test_a_page_labelled_latin_1_is_read_as_windows_1252() -> None:
    body = page(WESTERN, '<meta charset="iso-8859-1">').encode("cp1252")
    text, encoding = decode_body(body, None)
    assert WESTERN in text and encoding == "windows-1252"


def test_the_http_label_wins_over_the_meta_tag_and_the_bom_wins_over_both() -> None:
    body = page(JAPANESE, '<meta charset="utf-8">').encode("cp932")
    assert JAPANESE in decode_body(body, "shift_jis")[0]
    bom = b"\xef\xbb\xbf" + page(JAPANESE).encode("utf-8")
    assert decode_body(bom, "shift_jis") == (page(JAPANESE), "utf-8")


def test_meta_labels_in_legacy_japanese_pages_are_found_without_an_http_charset() -> None:
    head = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
    text, encoding = decode_body(page(JAPANESE, head).encode("cp932"), None)
    assert JAPANESE in text and encoding == "shift_jis"
    text, encoding = decode_body(to_euc_jp(page(JAPANESE, '<meta charset="EUC-JP">')), None)
    assert JAPANESE in text and encoding == "euc-jp"


def test_an_undeclared_legacy_page_is_sniffed_and_bad_bytes_never_fail() -> None:
    long_text = JAPANESE * 40
    text, _ = decode_body(page(long_text).encode("cp932"), None)
    assert JAPANESE in text
    text, encoding = decode_body(b"<p>caf\xc3\xa9 \xff\xfe broken</p>", "utf-8")
    assert "café" in text and "\ufffd" in text and encoding == "utf-8"
    # A meta tag claiming UTF-16 in an ASCII-readable page is a mistake: the page is read as UTF-8.
    assert decode_body(page("plain", '<meta charset="utf-16">').encode(), None)[1] == "utf-8"
