"""`aifactory generate` and `aifactory chat`: the local data directory, the running engine, a server."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from aifactory import cli
from tests.serve.conftest import Live
from tests.serve.helpers import make_tokenizer, save_checkpoint


def run(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, argv: list[str], stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUTO_TUNE", "0")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_generate_loads_the_model_itself_when_no_engine_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    save_checkpoint(data, make_tokenizer(data), step=3)
    code, out, _ = run(
        monkeypatch, data, ["generate", "The city", "--max-tokens", "5", "--seed", "1", "--json"]
    )
    result: dict[str, Any] = json.loads(out)
    assert code == 0 and result["status"] == "success" and result["usage"]["completion_tokens"] <= 5
    assert result["checkpoint"].startswith("step-000000003")
    code, plain, _ = run(monkeypatch, data, ["generate", "The city", "--max-tokens", "5", "--seed", "1"])
    assert code == 0 and plain == result["text"] + "\n"  # the same text, printed as it came


def test_generate_without_a_model_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, _, err = run(monkeypatch, tmp_path / "empty", ["generate", "hi"])
    assert code == 1 and "not produced a model" in err


def test_chat_through_the_running_engine_keeps_the_conversation(
    monkeypatch: pytest.MonkeyPatch, live: Live
) -> None:
    code, out, _ = run(
        monkeypatch,
        live.data_dir,
        ["chat", "--max-tokens", "4", "--no-rag"],
        stdin="hello\n/reset\nこんにちは\n/quit\n",
    )
    assert code == 0 and out.count("assistant> ") == 2 and "(conversation cleared)" in out


def test_generate_and_chat_against_a_server_url(
    monkeypatch: pytest.MonkeyPatch, live: Live, tmp_path: Path
) -> None:
    code, out, _ = run(
        monkeypatch,
        tmp_path,
        ["generate", "Hello", "--url", live.url, "--max-tokens", "4", "--json", "--no-rag"],
    )
    assert code == 0 and json.loads(out)["usage"]["completion_tokens"] <= 4
    code, out, _ = run(monkeypatch, tmp_path, ["chat", "--url", live.url, "--max-tokens", "3"], stdin="hi\n")
    assert code == 0 and out.count("assistant> ") == 1
    code, _, err = run(monkeypatch, tmp_path, ["generate", "x", "--url", live.url, "--model", "v9"])
    assert code == 1 and "404" in err
