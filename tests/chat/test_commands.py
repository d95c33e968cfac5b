"""`aifactory ingest --chat` and `aifactory train --chat-only`, as a person uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aifactory.dataset.builder import build
from aifactory.dataset.tokenizer import Tokenizer
from aifactory.db.database import Database
from aifactory.settings import Settings
from aifactory.train.checkpoint import CheckpointStore
from aifactory.train.foreground import train_command
from tests.chat.helpers import add_conversations, conversation_set
from tests.chat.test_tuning import CHAT_TINY
from tests.processes import aifactory

Q, A = "How do I water a small garden in summer?", "Water it early in the morning, at the roots."


def test_ingest_chat_files_in_the_three_formats(tmp_path: Path) -> None:
    (tmp_path / "openai.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]})
        + "\n{oops\n"
    )
    (tmp_path / "sharegpt.json").write_text(
        json.dumps(
            [
                {
                    "id": "7",
                    "conversations": [
                        {"from": "human", "value": Q + " Thanks."},
                        {"from": "gpt", "value": A},
                    ],
                }
            ]
        )
    )
    (tmp_path / "alpaca.jsonl").write_text(
        json.dumps({"instruction": Q, "input": "", "output": A + " Or late."})
    )
    result = aifactory(
        "ingest",
        "--chat",
        "openai.jsonl",
        "sharegpt.json",
        "alpaca.jsonl",
        cwd=tmp_path,
        DATA_DIR=tmp_path / "d",
    )
    assert result.returncode == 0, result.stderr
    assert "openai.jsonl: 2 records, 1 stored, 1 invalid" in result.stdout
    assert "    line 2: not valid JSON" in result.stdout
    assert (
        "sharegpt.json: 1 records, 1 stored" in result.stdout
        and "alpaca.jsonl: 1 records, 1 stored" in result.stdout
    )
    (tmp_path / "empty.jsonl").write_text("")
    empty = aifactory("ingest", "--chat", "empty.jsonl", cwd=tmp_path, DATA_DIR=tmp_path / "d")
    assert empty.returncode == 1 and "empty.jsonl: empty" in empty.stderr


def test_train_chat_only_fine_tunes_on_the_conversations(
    make_settings: Any,
    settings: Settings,
    corpus_db: Database,
    tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture,
) -> None:
    build(settings, corpus_db)
    tiny = make_settings(database_url=corpus_db.url, **CHAT_TINY)
    out = Path(tiny.data_dir) / "checkpoints"
    assert train_command(tiny, steps=3, text_file=None, out=out, chat_only=True) == 2
    assert "aifactory ingest --chat FILE" in capsys.readouterr().err
    add_conversations(corpus_db, conversation_set(40))
    assert train_command(tiny, steps=4, text_file=None, out=out, chat_only=True) == 0
    assert "conversations" in capsys.readouterr().out
    _, meta = CheckpointStore(out).read_meta("latest")
    assert meta["step"] == 4 and meta["data_mix"]["chat_ratio"] == 1.0
    assert train_command(tiny, steps=2, text_file=None, out=out, chat_only=True) == 0  # goes on from there
    assert CheckpointStore(out).read_meta("latest")[1]["step"] == 6
