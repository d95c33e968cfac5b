"""The one overall score in [0, 1]: chance-adjusted multiple-choice accuracy, each language alike.

    accuracy = mean over languages of the language's accuracy
    score    = clip((accuracy - chance) / (1 - chance), 0, 1)

Guessing scores about 0, a perfect model 1, linear in between (docs/evaluation.md)."""

from __future__ import annotations


def mean_accuracy(per_language: dict[str, dict[str, float]]) -> float:
    if not per_language:
        return 0.0
    return sum(part["accuracy"] for part in per_language.values()) / len(per_language)


def overall(accuracy: float, chance: float) -> float:
    return min(1.0, max(0.0, (accuracy - chance) / (1.0 - chance)))
