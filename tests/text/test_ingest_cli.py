"""`aifactory ingest` on a folder of mixed files, as a new user would try it."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import aifactory
from tests.text import pages


def test_ingest_a_folder_from_the_command_line(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "park.txt").write_text("\n\n".join(pages.NEWS_EN))
    (notes / "birds.md").write_text("# Kingfishers\n\n" + "\n\n".join(pages.WIKI_EN))
    (notes / "ja.html").write_text(pages.page("公園", pages.NEWS_JA, lang="ja"))
    (notes / "copy.txt").write_text("\n\n".join(pages.NEWS_EN))
    (notes / "spam.txt").write_text("\n".join(pages.SPAM_EN))
    (notes / "blob.txt").write_bytes(b"\x00\x01\x02")
    result = aifactory("ingest", str(notes), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "6 documents read" not in result.stdout  # the binary file is skipped, not read
    assert "5 documents read: 3 stored, 1 duplicates, 1 filtered" in result.stdout
    assert "filtered repeated_lines: 1" in result.stdout
    assert "skipped" in result.stdout and "blob.txt: binary file" in result.stdout
    status = aifactory("status", cwd=tmp_path).stdout
    assert "docs.stored.local = 3" in status

    again = aifactory("ingest", str(notes), cwd=tmp_path)
    assert "0 stored, 4 duplicates" in again.stdout  # nothing is stored twice


def test_ingest_of_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    result = aifactory("ingest", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 1 and "no such file or folder" in result.stderr
