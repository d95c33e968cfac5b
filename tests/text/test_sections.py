"""Section headings kept as offsets into the text: Markdown, HTML, and a part of a long document."""

from __future__ import annotations

from aifactory.text.extract import extract_document
from aifactory.text.sections import markdown_headings, section_offsets, section_texts

MARKDOWN = "# Manual\n\nWhat the tool does.\n\n## Installing\n\nRun the installer.\n\n## Usage\n\nCall it.\n"


def test_markdown_headings_point_at_their_lines_and_the_text_is_unchanged() -> None:
    extracted = extract_document(MARKDOWN, "text/markdown")
    assert extracted is not None and extracted.text == MARKDOWN.strip()
    sections = section_offsets(extracted.text, extracted.headings)
    assert [(level, heading) for _, level, heading in sections] == [
        (1, "Manual"),
        (2, "Installing"),
        (2, "Usage"),
    ]
    assert section_texts(extracted.text, sections)[1] == (2, "Installing", "Run the installer.")


def test_html_headings_come_from_the_extractors_tree() -> None:
    paragraph = "This sentence is here so that the extractor keeps the page as its main content. " * 3
    body = f"<h1>Guide</h1><p>{paragraph}</p><h3>Set up</h3><p>{paragraph}</p>"
    html = f"<html><body><article>{body}</article></body></html>"
    extracted = extract_document(html, "text/html")
    assert extracted is not None and extracted.headings == ((1, "Guide"), (3, "Set up"))
    sections = section_offsets(extracted.text, extracted.headings)
    assert [extracted.text[offset:].split("\n", 1)[0] for offset, _, _ in sections] == ["Guide", "Set up"]


def test_a_part_of_a_long_document_finds_its_own_headings() -> None:
    headings = tuple((2, f"Chapter {n}") for n in range(1, 30))
    part = "Chapter 20\nText of twenty.\nChapter 21\nText of twenty-one.\n"
    assert [heading for _, _, heading in section_offsets(part, headings)] == ["Chapter 20", "Chapter 21"]
    assert section_offsets(part, ()) == [] and markdown_headings("no headings here") == ()
