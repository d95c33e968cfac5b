"""The text steps alone: extraction, normalisation, language, quality, PII, MinHash."""

from __future__ import annotations

import time

import numpy as np
import pytest

from aifactory.text.extract import ExtractionTimeout, extract_document, extract_html
from aifactory.text.language import detect_language, language_allowed
from aifactory.text.minhash import MinHasher, similarity
from aifactory.text.normalize import normalize_text, split_long
from aifactory.text.pii import mask_pii
from aifactory.text.quality import QualityRules, assess_quality
from tests.text import pages


def test_extraction_keeps_the_article_and_drops_the_boilerplate() -> None:
    got = extract_html(pages.page("Council approves park plan", pages.NEWS_EN), "https://riverton.example/a")
    assert got is not None
    assert "railway yard" in got.text and "two public meetings" in got.text
    for boilerplate in ("Home", "Weather", "cookies", "All rights reserved", "Related", "New bus line"):
        assert boilerplate not in got.text, boilerplate
    assert got.title.startswith("Council approves park plan")


def test_extraction_of_japanese_and_documentation_pages() -> None:
    ja = extract_html(pages.page("公園整備計画を可決", pages.NEWS_JA, lang="ja"))
    assert ja is not None and "旧鉄道操車場" in ja.text and "Home" not in ja.text
    doc = extract_html(pages.docs_page())
    assert doc is not None and "environment variable" in doc.text
    assert "port = 8080" in doc.text  # code blocks are part of documentation


def test_plain_text_and_markdown_pass_through_normalised() -> None:
    got = extract_document("# Title\n\n\n\nSome   text\r\nhere\x00.", "text/markdown")
    assert got is not None and got.text == "# Title\n\nSome text\nhere." and got.title == "Title"
    assert extract_document("   ", "text/plain") is None
    navigation_only = extract_html("<html><body><nav>Home</nav></body></html>")
    assert navigation_only is None or assess_quality(navigation_only.text, "en").reason == "too_short"


def test_adversarial_html_is_handled_in_bounded_time() -> None:
    nested = "<div>" * 100_000 + "text" + "</div>" * 100_000
    long_line = "<p>" + "word " * 200_000 + "</p>"
    garbage = "\x00\xff<<<>>>" * 10_000
    started = time.monotonic()
    for html in (nested, long_line, garbage):
        try:
            extract_document(html, "text/html", timeout=5)
        except (Exception, ExtractionTimeout) as exc:  # rejected is fine; hanging or crashing is not
            assert type(exc).__name__ in ("ExtractionTimeout", "ValueError", "ParserError")
    assert time.monotonic() - started < 30


def test_normalisation() -> None:
    assert normalize_text("ＡＢＣ１２３　全角\u200bです") == "ABC123 全角です"
    assert normalize_text("a\t\tb  \n\n\n\nc ") == "a b\n\nc"
    assert normalize_text("def f():\n    return  1\n") == "def f():\n    return 1"  # indentation stays
    assert normalize_text("e\u0301") == "é"  # NFC composes


def test_long_documents_are_split_at_paragraphs_not_dropped() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "x" * 90 for i in range(100))
    parts = split_long(text, 1000)
    assert len(parts) > 5 and all(len(p) <= 1000 for p in parts)
    assert all(p.startswith("Paragraph") for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")
    assert split_long("short", 1000) == ["short"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (" ".join(pages.NEWS_EN), "en"),
        ("".join(pages.NEWS_JA), "ja"),
        ("".join(pages.WIKI_JA), "ja"),
        ("東京都は日本の首都であり、人口は約千四百万人である。", "ja"),
        ("Der Stadtrat hat am Dienstag einen neuen Plan für das alte Bahngelände beschlossen.", "de"),
    ],
)
def test_language_is_identified_with_confidence(text: str, code: str) -> None:
    found = detect_language(text)
    assert found.code == code and found.confidence > 0.5


def test_too_little_text_is_undetermined_not_mislabelled() -> None:
    assert detect_language("12345 !!!").code == "und"
    assert detect_language("ok").confidence < 0.5
    assert language_allowed("ja", ["ja", "en"]) and not language_allowed("de", ["ja", "en"])
    assert language_allowed("de", [])


@pytest.mark.parametrize(
    ("paragraphs", "language"),
    [
        (pages.NEWS_EN, "en"),
        (pages.FORUM_EN, "en"),
        (pages.WIKI_EN, "en"),
        (pages.NEWS_JA, "ja"),
        (pages.WIKI_JA, "ja"),
    ],
)
def test_good_documents_pass_with_a_high_score(paragraphs: list[str], language: str) -> None:
    verdict = assess_quality("\n\n".join(paragraphs), language)
    assert verdict.accepted, verdict
    assert verdict.score > 0.5


def test_japanese_is_not_judged_by_english_word_rules() -> None:
    """Whitespace finds a handful of 'words' in Japanese; the word rules would reject all of it. The
    rules follow the script of each line, so even a wrong language label does not do that."""
    text = "\n\n".join(pages.NEWS_JA)
    assert len(text.split()) < 10
    assert assess_quality(text, "ja").accepted
    verdict = assess_quality(text, "en")
    assert verdict.accepted and {check.part for check in verdict.checks} == {"all", "cjk"}


@pytest.mark.parametrize(
    ("text", "language", "reason"),
    [
        ("\n".join(pages.SPAM_EN), "en", "repeated_lines"),
        ("Buy the cheap pills and the watches. " * 300, "en", "low_vocabulary"),
        ("Too short.", "en", "too_short"),
        ("Lorem ipsum dolor sit amet. " * 20, "en", "placeholder_text"),
        ("\n".join(f"- item {i} of the list {'x' * 20}" for i in range(60)), "en", "bullet_lines"),
        ("\n".join(f"Item {i} costs {'x' * 20} dollars" for i in range(60)), "en", "no_punctuation"),
        (" ".join(f"Item {i} costs {'x' * 20} dollars." for i in range(60)), "en", "no_stop_words"),
        ("アイウエオカキクケコ" * 40, "ja", "low_hiragana"),
        ("です。" * 200, "ja", "short_sentences"),
    ],
)
def test_bad_documents_are_rejected_with_a_reason(text: str, language: str, reason: str) -> None:
    verdict = assess_quality(text, language)
    assert verdict.reason == reason, verdict
    assert verdict.score <= 0.3


def test_thresholds_are_configurable() -> None:
    text = "\n\n".join(pages.NEWS_EN)
    assert assess_quality(text, "en", QualityRules(min_words=10_000)).reason == "too_few_words"
    assert assess_quality(text, "en", QualityRules(min_chars=10)).accepted


def test_pii_is_masked_in_place() -> None:
    text = (
        "Write to jane.doe@example.org or call +1 (555) 123-4567 or 03-1234-5678 / 090-1234-5678. "
        "Server 10.0.0.12 answered. The year 2024 and order 12345 stay."
    )
    masked, count = mask_pii(text)
    assert count == 5
    for secret in ("jane.doe", "555", "1234-5678", "10.0.0.12"):
        assert secret not in masked
    assert "2024" in masked and "12345" in masked and "Write to email@example.com" in masked


def test_minhash_finds_near_copies_and_separates_different_texts() -> None:
    hasher = MinHasher()
    article = extract_html(pages.page("Council approves park plan", pages.NEWS_EN))
    syndicated = extract_html(pages.near_copy_of_news())
    other = "\n\n".join(pages.WIKI_EN)
    assert article is not None and syndicated is not None
    a, b, c = (hasher.signature(t, "en") for t in (article.text, syndicated.text, other))
    assert similarity(a, b) > 0.8 and similarity(a, c) < 0.2
    assert set(hasher.band_keys(a)) & set(hasher.band_keys(b))
    assert not set(hasher.band_keys(a)) & set(hasher.band_keys(c))
    ja = "".join(pages.NEWS_JA)
    edited = ja.replace("火曜日", "水曜日")
    assert similarity(hasher.signature(ja, "ja"), hasher.signature(edited, "ja")) > 0.8


def test_minhash_signatures_are_stable_across_processes() -> None:
    """Every node must compute the same signature: no use of Python's randomised hash()."""
    signature = MinHasher().signature("a stable text about kingfishers and rivers", "en")
    assert signature.dtype == np.uint32 and signature.shape == (112,)
    assert int(signature.astype(np.uint64).sum()) == int(
        MinHasher().signature("a stable text about kingfishers and rivers", "en").astype(np.uint64).sum()
    )
