"""The multiple-choice continuation task: frozen, versioned, built from held-out validation documents.

Each validation document is cut into passages of CONTEXT_TOKENS + CONTINUATION_TOKENS tokens. An item
is one passage's context with CHOICES continuations: its own, and CHOICES - 1 continuations of passages
of *other* documents of the same language (never equal to the true one), in a fixed random order drawn
from the task version. The model chooses the continuation with the highest log-likelihood per byte;
chance is 1 / CHOICES. Everything is a function of the validation documents, so the same validation
version gives the same task, and `version` names it: scores are only compared within one version.

Scoring runs every item and choice as rows of one batched forward pass (cut into chunks of ROWS rows
to bound memory), scoring only the continuation tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

TASK_FORMAT = 1  # bump when the construction below changes: every score before it is then incomparable
CONTEXT_TOKENS, CONTINUATION_TOKENS, CHOICES = 32, 16, 4
ROWS = 64  # sequences per forward pass


@dataclass
class Task:
    version: str
    languages: list[str]
    contexts: np.ndarray  # [items, CONTEXT_TOKENS]
    choices: np.ndarray  # [items, CHOICES, CONTINUATION_TOKENS]
    answers: np.ndarray  # [items] the index of the true continuation
    item_language: np.ndarray  # [items] index into languages
    skipped: dict[str, str]  # language -> why it has no items

    @property
    def chance(self) -> float:
        return 1.0 / CHOICES

    def __len__(self) -> int:
        return int(self.answers.size)


def task_version(validation_version: str) -> str:
    return f"mc{TASK_FORMAT}-{validation_version}"


def _passages(documents: list[np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    span = CONTEXT_TOKENS + CONTINUATION_TOKENS
    out = []
    for number, tokens in enumerate(documents):
        body = np.asarray(tokens[:-1], dtype=np.int64)  # without the EOS
        for start in range(0, body.size - span + 1, span):
            context = body[start : start + CONTEXT_TOKENS]
            out.append((number, context, body[start + CONTEXT_TOKENS : start + span]))
    return out


def build(documents: dict[str, list[np.ndarray]], validation_version: str, max_items: int) -> Task:
    """The task for these validation documents (ShardSource.validation_documents())."""
    version = task_version(validation_version)
    contexts, choices, answers, item_language, languages = [], [], [], [], []
    skipped: dict[str, str] = {}
    for language in sorted(documents):
        passages = _passages(documents[language])
        if len({number for number, _, _ in passages}) < CHOICES:
            skipped[language] = (
                f"fewer than {CHOICES} validation documents of {CONTEXT_TOKENS + CONTINUATION_TOKENS}+ tokens"
            )
            continue
        seed = int(hashlib.sha256(f"{version}/{language}".encode()).hexdigest()[:15], 16)
        rng = np.random.default_rng(seed)
        picks = np.unique(
            np.linspace(0, len(passages) - 1, min(max_items, len(passages))).round().astype(int)
        )
        start = len(answers)
        for pick in picks:
            number, context, true = passages[int(pick)]
            distractors: list[np.ndarray] = []
            for _ in range(64 * CHOICES):
                other, _, candidate = passages[int(rng.integers(len(passages)))]
                if other != number and not any(np.array_equal(candidate, c) for c in (true, *distractors)):
                    distractors.append(candidate)
                    if len(distractors) == CHOICES - 1:
                        break
            if len(distractors) < CHOICES - 1:
                continue  # the other documents repeat this passage: no fair item here
            answer = int(rng.integers(CHOICES))
            contexts.append(context)
            choices.append(np.stack([*distractors[:answer], true, *distractors[answer:]]))
            answers.append(answer)
            item_language.append(len(languages))
        if len(answers) > start:
            languages.append(language)
        else:
            skipped[language] = "its passages repeat one another: no fair item"
    empty = (0, CHOICES, CONTINUATION_TOKENS)
    return Task(
        version=version,
        languages=languages,
        contexts=np.stack(contexts) if contexts else np.zeros((0, CONTEXT_TOKENS), np.int64),
        choices=np.stack(choices) if choices else np.zeros(empty, np.int64),
        answers=np.asarray(answers, dtype=np.int64),
        item_language=np.asarray(item_language, dtype=np.int64),
        skipped=skipped,
    )


def sequences(task: Task) -> torch.Tensor:
    """[items x CHOICES, CONTEXT + CONTINUATION] every (context, choice) pair, item-major."""
    contexts = np.repeat(task.contexts[:, None, :], CHOICES, axis=1)
    rows = np.concatenate([contexts, task.choices], axis=2)
    return torch.from_numpy(rows.reshape(-1, rows.shape[-1]).astype(np.int64))


@torch.no_grad()
def choose(
    model: torch.nn.Module,
    task: Task,
    token_bytes: torch.Tensor,
    device: torch.device,
    check: Callable[[float], None] | None = None,
) -> np.ndarray:
    """[items] the choice the model finds most likely per byte. `check(fraction done)` is called between
    chunks (it raises to interrupt)."""
    rows = sequences(task)
    targets = rows[:, 1:].clone()
    targets[:, : CONTEXT_TOKENS - 1] = -1  # only the continuation is scored
    logprob = torch.empty(rows.size(0), dtype=torch.float64)
    for start in range(0, rows.size(0), ROWS):
        chunk = rows[start : start + ROWS].to(device)
        nll = model(chunk[:, :-1], targets[start : start + ROWS].to(device), reduction="none")
        logprob[start : start + ROWS] = -nll.double().sum(1).cpu()
        if check is not None:
            check((start + chunk.size(0)) / rows.size(0))
    nbytes = token_bytes[torch.from_numpy(task.choices)].sum(-1).clamp(min=1).double()
    per_byte = logprob.view(len(task), CHOICES) / nbytes
    return per_byte.argmax(1).numpy()


def accuracy(task: Task, chosen: np.ndarray) -> dict[str, dict[str, float]]:
    """Per language: accuracy, items and chance."""
    right = chosen == task.answers
    return {
        language: {
            "accuracy": float(right[task.item_language == index].mean()),
            "items": int((task.item_language == index).sum()),
            "chance": task.chance,
        }
        for index, language in enumerate(task.languages)
    }
