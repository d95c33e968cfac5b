"""Quality rules that keep documentation, manuals and Japanese prose, and still reject junk.

The labelled set (tests/text/labelled.py) is real Debian and Python documentation in Japanese and
English plus junk pages written for it; the rest are small cases that show one behaviour each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aifactory.text.engine import make_pool
from aifactory.text.extract import extract_html
from aifactory.text.pipeline import PipelineConfig, RawDocument, analyze
from aifactory.text.prose import CODE, MARKERS, NAVIGATION, PROSE, TABLE, classify_text, looks_like_command
from aifactory.text.quality import assess_quality
from tests.text import labelled, pages


@pytest.fixture(scope="module")
def scores() -> Iterator[labelled.Scores]:
    with make_pool(2) as pool:
        yield labelled.evaluate(labelled.real_pages() + labelled.junk(), pool=pool)


@pytest.mark.parametrize("language", ["en", "ja"])
def test_documentation_is_kept_and_junk_rejected_in_both_languages(
    scores: labelled.Scores, language: str
) -> None:
    mistakes = "\n".join(scores.mistakes)
    assert scores.keep_chars[language] > 500_000  # a real test: hundreds of pages of real manuals
    assert scores.keep_rate(language) >= 0.9, mistakes
    assert scores.junk_total[language] >= 30
    assert scores.reject_rate(language) >= 0.9, mistakes


def test_the_labelled_set_is_what_its_readme_says() -> None:
    real = labelled.real_pages()
    by_language = {lang: [page for page in real if page.language == lang] for lang in ("en", "ja")}
    assert len(by_language["en"]) >= 100 and len(by_language["ja"]) >= 80
    assert {page.name.split("/")[1] for page in by_language["ja"]} >= {"maint-guide", "debian-reference"}
    labels = {page.label for page in real}
    assert labels <= {"keep", "navigation", "front_matter", "screenshot"}
    assert sum(page.keep for page in real) > 0.85 * len(real)
    assert len({page.label for page in labelled.junk()}) >= 12


JA_SHELL_PAGE = """<!doctype html><html lang="ja"><head><meta charset="utf-8">
<title>パッケージの更新 | 管理者ガイド</title></head><body>
<nav><ul><li><a href="/">ホーム</a></li><li><a href="/guide/">ガイド</a></li></ul></nav>
<main><article><h1>パッケージの更新</h1>
<p>システムを最新の状態に保つには、定期的にパッケージを更新する必要があります。
更新の前に、<code>/etc/apt/sources.list</code> に正しいミラーが書かれていることを確認してください。</p>
<pre>$ sudo apt update
$ sudo apt full-upgrade
$ apt list --upgradable</pre>
<p>カーネルが更新された場合は、再起動するまで新しいカーネルは使われません。再起動が必要かどうかは
<code>/var/run/reboot-required</code> というファイルがあるかどうかで分かります。</p>
<pre>#!/bin/sh
if [ -f /var/run/reboot-required ]; then
    echo "再起動が必要です"
fi</pre>
<p>自動で更新したい場合は <code>unattended-upgrades</code> パッケージを使います。設定ファイルは
<code>/etc/apt/apt.conf.d/50unattended-upgrades</code> にあり、
更新の対象や通知の方法を細かく指定できます。</p>
<pre>$ sudo apt install unattended-upgrades
$ sudo dpkg-reconfigure -plow unattended-upgrades</pre>
<p>更新の記録は <code>/var/log/apt/history.log</code> に残るので、問題が起きたときには、いつどのパッケージが
更新されたかを後から調べることができます。</p>
</article></main><footer>Copyright 管理者ガイド</footer></body></html>"""


def test_a_japanese_page_with_shell_commands_and_code_is_kept() -> None:
    [doc] = analyze(RawDocument(url="https://guide.example/update", body=JA_SHELL_PAGE), PipelineConfig())
    assert doc.reject_reason is None, (doc.reject_reason, doc.reject_detail, doc.reject_value)
    assert doc.language == "ja"
    # the commands and the script are stored with the prose, lines and indentation intact
    assert "$ sudo apt update\n$ sudo apt full-upgrade" in doc.text
    assert '\n    echo "再起動が必要です"\n' in doc.text
    assert "/etc/apt/sources.list" in doc.text and "ホーム" not in doc.text
    assert not set(MARKERS) & set(doc.text)


NAVIGATION_PAGE = """<!doctype html><html lang="en"><head><title>Index</title></head><body><main>
{menus}
</main></body></html>"""


def test_a_page_of_repeated_navigation_links_is_dropped() -> None:
    menu = (
        "<p>"
        + " | ".join(
            f'<a href="/{section.lower()}/">{section}</a>'
            for section in "Home News Sport Weather Business Culture Travel Science Health Opinion".split()
        )
        + "</p>"
    )
    html = NAVIGATION_PAGE.format(menus="\n".join([menu] * 12))
    [doc] = analyze(RawDocument(url="https://news.example/", body=html), PipelineConfig())
    assert doc.reject_reason is not None
    # and when the extractor keeps link lists, the link rule names what they are
    lines = [
        f"[{word} {i}](https://x.example/{i}) [{word} more](https://y.example/{i})"
        for i, word in enumerate(
            "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split() * 3
        )
    ]
    verdict = assess_quality("\n\n".join(lines), "en")
    assert verdict.reason == "link_list" and verdict.failed is not None
    assert verdict.failed.value > 0.5 and verdict.failed.threshold == 0.5


def test_every_line_gets_a_kind_and_markers_never_leak() -> None:
    html = """<html><body><article><h1>Configuring the server</h1>
    <p>The server reads its settings from a file. Every option can also be given on the command line,
    which takes precedence over the file, as the <code>--port</code> option below shows.</p>
    <pre>[server]
port = 8080
    data_dir = /var/lib/app</pre>
    <p>$ app --port 9000</p>
    <table><tr><th>Option</th><th>Default</th></tr><tr><td>port</td><td>8080</td></tr></table>
    <p>See <a href="/a">the options</a>, <a href="/b">the log levels</a> and <a href="/c">the paths</a>.</p>
    <p>When the server starts, it checks that the data directory exists and that it can write there.
    If it cannot, it stops with an error message that names the directory and the reason.</p>
    </article></body></html>"""
    got = extract_html(html)
    assert got is not None and got.prose is not None
    kinds = {line.text: line.kind for line in got.prose.lines}
    assert kinds["port = 8080"] == CODE and kinds["    data_dir = /var/lib/app"] == CODE
    assert kinds["$ app --port 9000"] == CODE  # a command line in a paragraph
    assert any(kind == TABLE for kind in kinds.values())
    assert kinds["See the options, the log levels and the paths."] == NAVIGATION
    prose = [line for line in got.prose.lines if line.kind == PROSE]
    assert any(line.words_text.endswith("as the option below shows.") for line in prose)  # inline code out
    # a paragraph wrapped in the page's source is one line, and no marker is left in the text
    assert "which takes precedence over the file, as the --port option below shows." in got.text
    assert not set(MARKERS) & set(got.text)


def test_plain_text_and_markdown_lines_are_classified() -> None:
    text = (
        "# Install\n\nRun the installer, then check that the service\nstarted without errors.\n\n"
        "```\npip install app\napp --check\n```\n\n    indented code\n\n| a | b |\n|---|---|\n"
        "\n- first item of a list\n- second item\n\n>>> 1 + 1\n"
    )
    prose = classify_text(text)
    kinds = {line.text: line.kind for line in prose.lines}
    assert kinds["Run the installer, then check that the service started without errors."] == PROSE
    assert kinds["pip install app"] == CODE and kinds["    indented code"] == CODE
    assert kinds["| a | b |"] == TABLE and kinds[">>> 1 + 1"] == CODE
    assert kinds["- first item of a list"] == PROSE and kinds["- second item"] == PROSE
    assert looks_like_command("$ sudo apt install foo") and looks_like_command("x = f(a[1]); y = {}")
    assert not looks_like_command("The server (see above) reads its settings.")


def test_a_bilingual_manual_is_judged_part_by_part() -> None:
    """Half Japanese, half untranslated English (as many translated manuals are): each part is judged
    by its own rules, so both are kept; spam in either part is still caught."""
    manual = "\n\n".join(pages.NEWS_JA + pages.WIKI_JA + pages.DOCS_EN + pages.WIKI_EN)
    verdict = assess_quality(manual, "ja")
    assert verdict.accepted, verdict.failed
    assert {check.part for check in verdict.checks} == {"all", "cjk", "spaced"}
    spam = " ".join(["cheap watches buy now best price discount watches online"] * 40)
    spammed = "\n\n".join(pages.NEWS_JA + pages.WIKI_JA + [spam])
    failed = assess_quality(spammed, "ja").failed
    assert failed is not None and failed.part == "spaced"


def test_a_rejection_says_what_was_measured_against_what() -> None:
    verdict = assess_quality("\n".join(pages.SPAM_EN), "en")
    assert verdict.failed is not None
    assert (verdict.failed.rule, verdict.failed.bound) == ("repeated_lines", "max")
    assert verdict.failed.value > verdict.failed.threshold == 0.3
    assert all(check.passed for check in verdict.checks[: verdict.checks.index(verdict.failed)])
    [doc] = analyze(
        RawDocument(url="https://spam.example/", body="\n".join(pages.SPAM_EN), content_type="text/plain"),
        PipelineConfig(),
    )
    assert (doc.reject_reason, doc.reject_value, doc.reject_threshold) == ("repeated_lines", 0.9667, 0.3)


def test_lorem_ipsum_in_a_code_example_is_not_placeholder_text() -> None:
    html = (
        "<html><body><article><h1>The lorem tag</h1>"
        + "".join(f"<p>{p}</p>" for p in pages.DOCS_EN + pages.WIKI_EN)
        + "<pre>{% lorem 3 p %}\nLorem ipsum dolor sit amet, consectetur adipiscing elit.\n"
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.</pre></article></body></html>"
    )
    [doc] = analyze(RawDocument(url="https://docs.example/lorem", body=html), PipelineConfig())
    assert doc.reject_reason is None, doc.reject_reason
    filler = "<html><body>" + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * 5
    [junk] = analyze(RawDocument(url="https://x.example/", body=filler + "</body></html>"), PipelineConfig())
    assert junk.reject_reason is not None
