"""Ollama and LM Studio: the Modelfile by content, `ollama create` when a binary is there, LM Studio's layout.

No `ollama` binary exists on the test machine, so `ollama create` itself cannot run here; a stand-in
script on the PATH checks that the command line and the files it is given are what Ollama needs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from aifactory.export import ExportError, tasks, template
from aifactory.export.source import resolve
from aifactory.export.targets import check_ollama_name, modelfile


def test_modelfile_says_what_ollama_needs_for_our_chat_format() -> None:
    text = modelfile(
        "aifactory-q8_0.gguf", context=1024, system="You answer briefly.", source="checkpoint best"
    )
    lines = text.splitlines()
    assert "FROM ./aifactory-q8_0.gguf" in lines
    assert (
        'TEMPLATE """{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}<|end|>{{ end }}<|assistant|>"""'
        in lines
    )
    assert 'PARAMETER stop "<|end|>"' in lines and 'PARAMETER stop "</s>"' in lines
    assert "PARAMETER num_ctx 1024" in lines and "PARAMETER temperature 0.7" in lines
    assert 'SYSTEM """You answer briefly."""' in lines
    # BOS comes from the GGUF (add_bos_token), never from the template
    assert "<s>" not in template.OLLAMA_TEMPLATE and "bos" not in template.OLLAMA_TEMPLATE.lower()


def test_the_ollama_template_renders_the_serving_prompt() -> None:
    """Go's template, evaluated by hand for the chat: system, user, assistant, user, then the prompt."""
    messages = [("system", "S"), ("user", "Q"), ("assistant", "A"), ("user", "Q2")]
    body = template.OLLAMA_TEMPLATE.removeprefix("{{- range .Messages }}")
    turn, after = body.split("{{ end }}")
    rendered = "".join(
        turn.replace("{{ .Role }}", role).replace("{{ .Content }}", text) for role, text in messages
    )
    assert (
        rendered + after
        == "<|system|>S<|end|><|user|>Q<|end|><|assistant|>A<|end|><|user|>Q2<|end|><|assistant|>"
    )


@pytest.mark.parametrize("name", ["aifactory", "aifactory:v3", "me/aifactory:latest", "a.b-c_d"])
def test_valid_ollama_names(name: str) -> None:
    assert check_ollama_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a b", "a:b:c", "../x", "a/b/c", "x:"])
def test_invalid_ollama_names_are_refused(name: str) -> None:
    with pytest.raises(ExportError, match="not a valid Ollama model name"):
        check_ollama_name(name)


def test_ollama_export_without_ollama_prints_the_command(factory_settings: Any, tmp_path: Path) -> None:
    settings = factory_settings()
    result = tasks.ollama(settings, resolve(settings), "aifactory:v1", tmp_path / "ollama", "q8_0")
    assert result["created"] is False
    files = sorted(p.name for p in (tmp_path / "ollama").iterdir())
    assert files == ["Modelfile", "aifactory-v1-q8_0.gguf"]
    assert (
        result["command"]
        == f"ollama-not-installed create aifactory:v1 -f {tmp_path / 'ollama' / 'Modelfile'}"
    )
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    assert "FROM ./aifactory-v1-q8_0.gguf" in text and "PARAMETER num_ctx 256" in text


def test_ollama_create_runs_when_ollama_is_installed(factory_settings: Any, tmp_path: Path) -> None:
    """A stand-in `ollama` records how it was called and what the Modelfile's FROM points at."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ollama"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$@" > "$(dirname "$0")/called"\n'
        'from=$(sed -n "s/^FROM //p" "$4")\n'
        'test -s "$(dirname "$4")/$from" && echo "success"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    settings = factory_settings(ollama_bin=str(script))
    result = tasks.ollama(settings, resolve(settings), "aifactory", tmp_path / "m", "f16")
    assert result["created"] is True
    assert (bin_dir / "called").read_text().split() == [
        "create",
        "aifactory",
        "-f",
        str(tmp_path / "m" / "Modelfile"),
    ]


def test_a_failing_ollama_create_keeps_the_files_and_says_why(factory_settings: Any, tmp_path: Path) -> None:
    script = tmp_path / "ollama"
    script.write_text("#!/bin/sh\necho 'Error: could not connect to ollama app' >&2\nexit 1\n")
    script.chmod(0o755)
    settings = factory_settings(ollama_bin=str(script))
    with pytest.raises(ExportError, match="could not connect to ollama app"):
        tasks.ollama(settings, resolve(settings), "aifactory", tmp_path / "m", "f16")
    assert (tmp_path / "m" / "Modelfile").is_file()


def test_lmstudio_layout_is_publisher_model_file(factory_settings: Any, tmp_path: Path) -> None:
    settings = factory_settings()
    result = tasks.lmstudio(settings, resolve(settings), "q8_0", publisher="me")
    expected = tmp_path / "lmstudio" / "me" / "aifactory-g1-step60" / "aifactory-g1-step60-Q8_0.gguf"
    assert Path(result["file"]) == expected and expected.stat().st_size > 0
    assert sorted(os.listdir(tmp_path / "lmstudio")) == ["me"]
    with pytest.raises(ExportError, match="must be letters"):
        tasks.lmstudio(settings, resolve(settings), "q8_0", publisher="../evil")
