"""`aifactory export ...` as a user runs it: what it writes, what it says, and its errors."""

from __future__ import annotations

from pathlib import Path

from aifactory.dataset.tokenizer import Tokenizer
from tests.processes import aifactory


def test_export_gguf_ollama_and_lmstudio_from_the_command_line(
    factory: tuple[Path, Tokenizer], tmp_path: Path
) -> None:
    settings = {"DATA_DIR": factory[0], "EXPORT_DIR": tmp_path / "exports", "OLLAMA_BIN": "no-ollama-here"}
    gguf = aifactory(
        "export", "gguf", "--type", "q8_0", "--check", str(tmp_path / "m.gguf"), cwd=tmp_path, **settings
    )
    assert gguf.returncode == 0, gguf.stderr
    assert "checked in llama.cpp: same" in gguf.stdout
    assert (
        f"wrote {tmp_path / 'm.gguf'} (q8_0" in gguf.stdout
        and (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"
    )
    assert "from checkpoint best" in gguf.stderr

    ollama = aifactory("export", "ollama", "aifactory:v1", cwd=tmp_path, **settings)
    assert ollama.returncode == 0, ollama.stderr
    folder = tmp_path / "exports" / "ollama" / "aifactory-v1"
    assert f"no-ollama-here create aifactory:v1 -f {folder / 'Modelfile'}" in ollama.stdout
    assert "ollama run aifactory:v1" in ollama.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "aifactory-v1-f16.gguf"]

    studio = aifactory(
        "export", "lmstudio", "--models-dir", str(tmp_path / "lms"), "--type", "f32", cwd=tmp_path, **settings
    )
    assert studio.returncode == 0, studio.stderr
    assert (tmp_path / "lms" / "aifactory" / "aifactory-g1-step60" / "aifactory-g1-step60-F32.gguf").is_file()


def test_export_errors_say_what_is_wrong(factory: tuple[Path, Tokenizer], tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    taken = aifactory("export", "hf", str(tmp_path / "taken"), cwd=tmp_path, DATA_DIR=factory[0])
    assert taken.returncode == 1 and "already exists" in taken.stderr
    unknown = aifactory(
        "export", "gguf", "--checkpoint", "newest", "x.gguf", cwd=tmp_path, DATA_DIR=factory[0]
    )
    assert unknown.returncode == 1 and "unknown checkpoint 'newest'" in unknown.stderr
    empty = aifactory("export", "gguf", "x.gguf", cwd=tmp_path, DATA_DIR=tmp_path / "nothing")
    assert empty.returncode == 1 and "there is no latest checkpoint" in empty.stderr
    name = aifactory("export", "ollama", "bad name", cwd=tmp_path, DATA_DIR=factory[0])
    assert name.returncode == 1 and "not a valid Ollama model name" in name.stderr
    assert not (tmp_path / "x.gguf").exists()
