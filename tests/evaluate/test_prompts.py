"""The prompt file: the starter set, the data directory's file and EVAL_PROMPTS_FILE; echoing the
prompt never scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aifactory.evaluate import EvalError, prompts


def test_the_starter_set_has_japanese_and_english_prompts(make_settings: Any) -> None:
    loaded = prompts.load(make_settings())
    assert {p.language for p in loaded} == {"ja", "en"}
    assert {language for _, language, _ in prompts.GROWTH_PROMPTS} == {"ja", "en"}


def test_echoing_the_prompt_never_scores_and_a_keyword_from_the_prompt_is_refused() -> None:
    for prompt in prompts.parse(json.loads(prompts.STARTER.read_text()), "starter"):
        assert prompts.keyword_score(prompt, prompt.prompt) == (0.0, [])
        assert prompts.keyword_score(prompt, prompt.prompt * 3)[0] == 0.0
    capital = prompts.parse([{"prompt": "The capital of France is", "keywords": ["Paris"]}], "x")[0]
    assert prompts.keyword_score(capital, " paris, of course") == (1.0, ["Paris"])
    with pytest.raises(EvalError, match="occurs in the prompt"):
        prompts.parse([{"prompt": "Paris is the capital of", "keywords": ["Paris"]}], "x")
    with pytest.raises(EvalError, match="keywords"):
        prompts.parse([{"prompt": "hello"}], "x")


def test_a_file_in_the_data_directory_replaces_the_starter_set_and_the_setting_wins(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "eval_prompts.json").write_text(
        json.dumps([{"id": "mine", "language": "en", "prompt": "One, two,", "keywords": ["three"]}])
    )
    assert [p.id for p in prompts.load(settings)] == ["mine"]
    elsewhere = tmp_path / "other.json"
    elsewhere.write_text("not json")
    with pytest.raises(EvalError, match="not valid JSON"):
        prompts.load(make_settings(eval_prompts_file=str(elsewhere)))
