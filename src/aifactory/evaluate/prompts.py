"""The prompt file (user-editable prompts with expected keywords) and the fixed growth prompts.

The file is JSON, a list of {"id", "language", "prompt", "keywords": [...]}; a keyword may list
alternatives as "autumn|fall". Which file: EVAL_PROMPTS_FILE when set, else DATA_DIR/eval_prompts.json
when it exists, else the starter set shipped in this package (ja + en).

Scoring never rewards echoing the prompt: a prompt's score is the share of its keywords found in the
*generated* text (the prompt is not part of it), and a keyword that occurs in its own prompt is refused
when the file is read, so repeating the prompt cannot find any keyword. Matching ignores case.
This module does not import torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory.evaluate import EvalError
from aifactory.settings import Settings

FILE_NAME = "eval_prompts.json"
STARTER = Path(__file__).with_name(FILE_NAME)

# Growth samples: the same prompts, answered greedily at every evaluation, never edited (changing one
# would cut its history); new ones may be appended.
GROWTH_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("growth-ja-1", "ja", "昔々、ある村に"),
    ("growth-ja-2", "ja", "人工知能とは"),
    ("growth-ja-3", "ja", "今日の天気は"),
    ("growth-en-1", "en", "Once upon a time, in a small village,"),
    ("growth-en-2", "en", "Artificial intelligence is"),
    ("growth-en-3", "en", "The weather today is"),
)


@dataclass(frozen=True)
class Prompt:
    id: str
    language: str
    prompt: str
    keywords: tuple[str, ...]  # each "a|b" = a or b


def prompts_path(settings: Settings) -> Path:
    if settings.eval_prompts_file:
        return Path(settings.eval_prompts_file).expanduser()
    local = Path(settings.data_dir) / FILE_NAME
    return local if local.is_file() else STARTER


def parse(data: Any, where: str) -> list[Prompt]:
    if not isinstance(data, list):
        raise EvalError(f"{where}: the prompt file must be a JSON list of prompts")
    out, seen = [], set()
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"]:
            raise EvalError(f'{where}: prompt {number} needs a non-empty "prompt" string')
        keywords = item.get("keywords")
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) and k for k in keywords)
        ):
            raise EvalError(f'{where}: prompt {number} needs "keywords", a non-empty list of strings')
        prompt_id = str(item.get("id") or f"prompt-{number}")
        if prompt_id in seen:
            raise EvalError(f"{where}: prompt id {prompt_id!r} is used twice")
        seen.add(prompt_id)
        for keyword in keywords:
            for alternative in keyword.split("|"):
                if alternative.strip().lower() in item["prompt"].lower():
                    raise EvalError(
                        f"{where}: prompt {prompt_id!r}: keyword {alternative!r} occurs in the prompt "
                        "itself, "
                        "so echoing the prompt would score; expect something the prompt does not say"
                    )
        out.append(Prompt(prompt_id, str(item.get("language", "")), item["prompt"], tuple(keywords)))
    return out


def load(settings: Settings) -> list[Prompt]:
    path = prompts_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalError(f"cannot read the prompt file {path} (EVAL_PROMPTS_FILE): {exc}") from None
    except ValueError as exc:
        raise EvalError(f"the prompt file {path} is not valid JSON: {exc}") from None
    return parse(data, str(path))


def keyword_score(prompt: Prompt, generated: str) -> tuple[float, list[str]]:
    """(share of keywords found in the generated text, the keywords found)."""
    text = generated.lower()
    found = [k for k in prompt.keywords if any(a.strip().lower() in text for a in k.split("|") if a.strip())]
    return len(found) / len(prompt.keywords), found
