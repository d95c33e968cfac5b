"""Local files for `aifactory ingest`: which files a folder yields, how they decode, and dumps of any size."""

from __future__ import annotations

import bz2
import os
import tracemalloc
from collections import Counter
from pathlib import Path

from aifactory.sources.files import iter_paths, read_file
from aifactory.sources.wikidump import iter_dump
from tests.text import pages


def test_a_folder_below_a_dot_directory_is_walked_and_only_hidden_names_inside_it_are_skipped(
    tmp_path: Path,
) -> None:
    folder = tmp_path / ".cache" / "site"
    (folder / "docs").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "index.html").write_text("<p>x</p>")
    (folder / "docs" / "guide.md").write_text("# guide")
    (folder / ".git" / "notes.txt").write_text("hidden folder")
    (folder / ".draft.txt").write_text("hidden file")
    (folder / "manual.pdf").write_bytes(b"%PDF")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    passed_over: Counter[str] = Counter()
    found = list(iter_paths([folder], passed_over))
    assert found == [folder / "docs" / "guide.md", folder / "index.html"]
    assert passed_over == {"hidden": 2, ".pdf": 1, ".png": 1}


def test_relative_paths_with_dot_dot_are_walked(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    (tmp_path / "work").mkdir()
    cwd = Path.cwd()
    os.chdir(tmp_path / "work")
    try:
        assert [p.name for p in iter_paths([Path("../notes")])] == ["a.txt"]
    finally:
        os.chdir(cwd)


def test_html_files_are_decoded_by_their_declared_charset(tmp_path: Path) -> None:
    text = "髙橋さんの①番目の記事です。" + "".join(pages.NEWS_JA)
    legacy = tmp_path / "old.html"
    legacy.write_bytes(
        f'<html><head><meta charset="Shift_JIS"></head><body><p>{text}</p></body></html>'.encode("cp932")
    )
    (doc,) = read_file(legacy)
    assert text in doc.body
    modern = tmp_path / "new.html"
    modern.write_text(f"<html><body><p>{text}</p></body></html>", encoding="utf-8")
    (doc,) = read_file(modern)
    assert text in doc.body


def write_dump(path: Path, count: int) -> None:
    compressor = bz2.BZ2Compressor()
    with path.open("wb") as file:
        file.write(compressor.compress(b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">'))
        for i in range(count):
            page = (
                f"<page><title>Page {i}</title><ns>0</ns><revision><text>Article {i} is about "
                f"[[topic {i % 97}]]. It has one sentence.</text></revision></page>"
            )
            file.write(compressor.compress(page.encode()))
        file.write(compressor.compress(b"</mediawiki>"))
        file.write(compressor.flush())


def peak_while_reading(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_dump(path))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_dump_is_read_in_constant_memory(tmp_path: Path) -> None:
    small, large = (
        tmp_path / "enwiki-small-pages-articles.xml.bz2",
        tmp_path / "enwiki-large-pages-articles.xml.bz2",
    )
    write_dump(small, 5_000)
    write_dump(large, 50_000)
    small_count, small_peak = peak_while_reading(small)
    large_count, large_peak = peak_while_reading(large)
    assert (small_count, large_count) == (5_000, 50_000)
    # Ten times the pages, (nearly) the same memory: nothing accumulates per page.
    assert large_peak < 2 * small_peak, (small_peak, large_peak)
