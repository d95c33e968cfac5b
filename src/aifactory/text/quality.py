"""Quality filter whose rules fit the language.

Space-separated languages get the Gopher quality and repetition rules and FineWeb's line-punctuation
rule (datatrove defaults). Japanese and Chinese have no spaces between words, so word-based rules
would reject every document (the original's mistake); they get character-based rules instead, after
the Swallow corpus and FineWeb-2's per-language thresholds: script ratios, sentence lengths and
character n-gram repetition.

Every document gets a `quality_score` in [0, 1] (how comfortably it passes, used to weight sampling)
and, when rejected, the first rule it failed as `reason` (counted per reason on the dashboard).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

CJK_LANGUAGES = {"ja", "zh"}
ANALYSIS_CHARS = 30_000  # statistics on a sample: enough to see spam, bounded in time
CJK_ANALYSIS_CHARS = 10_000  # character n-grams: one unit per character, so a smaller sample
_PRIME = np.uint64(1_000_003)
STOP_WORDS_EN = {"the", "be", "to", "of", "and", "that", "have", "with"}
TERMINAL = tuple(".!?\"'。｡！？」』)”")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[。．！？!?])")
_HIRAGANA = re.compile(r"[\u3040-\u309f]")
_KATAKANA = re.compile(r"[\u30a0-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")


@dataclass(frozen=True)
class QualityRules:
    """Thresholds; the defaults are the published ones (Gopher, FineWeb, FineWeb-2, Swallow)."""

    min_chars: int = 120
    min_words: int = 50
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    max_dup_line_frac: float = 0.3
    min_line_punct_ratio: float = 0.12
    top_ngram_max: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_ngram_max: tuple[tuple[int, float], ...] = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )
    # Japanese/Chinese, character based
    min_cjk_ratio: float = 0.5
    min_hiragana_ratio: float = 0.15
    max_katakana_ratio: float = 0.5
    min_mean_sentence_chars: float = 10.0
    max_mean_sentence_chars: float = 150.0
    cjk_top_ngram_max: tuple[tuple[int, float], ...] = ((2, 0.239), (3, 0.196), (4, 0.172))
    cjk_dup_ngram_max: tuple[tuple[int, float], ...] = (
        (5, 0.243),
        (6, 0.225),
        (7, 0.207),
        (8, 0.19),
        (9, 0.175),
        (10, 0.159),
    )


@dataclass
class QualityVerdict:
    score: float
    reason: str | None  # None = accepted
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.reason is None


class _Checks:
    """Collects rule outcomes: the first failure is the reason; margins make the score."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.margins: list[float] = []
        self.stats: dict[str, float] = {}

    def at_most(self, name: str, value: float, limit: float) -> None:
        self.stats[name] = round(value, 4)
        self.margins.append(max(0.0, min(1.0, 1.0 - value / limit)) if limit > 0 else 1.0)
        if value > limit and self.reason is None:
            self.reason = name

    def at_least(self, name: str, value: float, limit: float) -> None:
        self.stats[name] = round(value, 4)
        self.margins.append(max(0.0, min(1.0, (value - limit) / limit)) if limit > 0 else 1.0)
        if value < limit and self.reason is None:
            self.reason = name

    def verdict(self, length_bonus: float) -> QualityVerdict:
        base = sum(self.margins) / len(self.margins) if self.margins else 0.0
        score = 0.7 * base + 0.3 * length_bonus
        if self.reason is not None:
            score = min(score, 0.3)  # a rejected document never outranks an accepted one
        return QualityVerdict(round(score, 4), self.reason, self.stats)


def assess_quality(text: str, language: str, rules: QualityRules | None = None) -> QualityVerdict:
    rules = rules or QualityRules()
    if not text.strip():
        return QualityVerdict(0.0, "empty")
    if len(text) < rules.min_chars:
        return QualityVerdict(0.0, "too_short", {"chars": len(text)})
    if "lorem ipsum" in text[:ANALYSIS_CHARS].lower():
        return QualityVerdict(0.0, "placeholder_text")
    sample = text[:ANALYSIS_CHARS]
    checks = _Checks()
    lines = [line for line in sample.split("\n") if line.strip()]
    _line_repetition(checks, lines, rules)
    if language in CJK_LANGUAGES:
        _cjk_rules(checks, sample, language, rules)
    else:
        _spaced_rules(checks, sample, lines, language, rules)
    return checks.verdict(length_bonus=min(1.0, len(text) / 2000))


def _line_repetition(checks: _Checks, lines: list[str], rules: QualityRules) -> None:
    if not lines:
        return
    counts = Counter(lines)
    duplicated = sum(n for n in counts.values() if n > 1) - sum(1 for n in counts.values() if n > 1)
    checks.at_most("repeated_lines", duplicated / len(lines), rules.max_dup_line_frac)


def _spaced_rules(checks: _Checks, sample: str, lines: list[str], language: str, rules: QualityRules) -> None:
    words = sample.split()
    real_words = [w for w in words if any(ch.isalnum() for ch in w)]
    checks.at_least("too_few_words", len(real_words), rules.min_words)
    if not real_words:
        return
    mean_length = sum(len(w) for w in real_words) / len(real_words)
    checks.at_least("short_words", mean_length, rules.min_avg_word_length)
    checks.at_most("long_words", mean_length, rules.max_avg_word_length)
    symbols = sample.count("#") + sample.count("...") + sample.count("…")
    checks.at_most("symbols", symbols / len(words), rules.max_symbol_word_ratio)
    bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-", "*", "·")))
    checks.at_most("bullet_lines", bullets / len(lines), rules.max_bullet_lines_ratio)
    ellipsis = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
    checks.at_most("ellipsis_lines", ellipsis / len(lines), rules.max_ellipsis_lines_ratio)
    alpha = sum(1 for w in words if any(ch.isalpha() for ch in w))
    checks.at_least("non_alpha_words", alpha / len(words), rules.min_alpha_words_ratio)
    if language == "en":
        stop = sum(1 for w in words if w.lower() in STOP_WORDS_EN)
        checks.at_least("no_stop_words", stop, rules.min_stop_words)
    punct = sum(1 for line in lines if line.rstrip().endswith(TERMINAL))
    checks.at_least("no_punctuation", punct / len(lines), rules.min_line_punct_ratio)
    tokens = [w.lower() for w in _WORD.findall(sample)]
    _ngram_repetition(checks, tokens, rules.top_ngram_max, rules.dup_ngram_max)


def _cjk_rules(checks: _Checks, sample: str, language: str, rules: QualityRules) -> None:
    visible = [ch for ch in sample if not ch.isspace()]
    total = max(1, len(visible))
    hiragana = len(_HIRAGANA.findall(sample))
    katakana = len(_KATAKANA.findall(sample))
    han = len(_HAN.findall(sample))
    checks.at_least("not_enough_cjk", (hiragana + katakana + han) / total, rules.min_cjk_ratio)
    if language == "ja":
        checks.at_least("low_hiragana", hiragana / total, rules.min_hiragana_ratio)
        checks.at_most("too_much_katakana", katakana / total, rules.max_katakana_ratio)
    sentences = [s.strip() for line in sample.split("\n") for s in _SENTENCE_END.split(line) if s.strip()]
    if sentences:
        mean = sum(len(s) for s in sentences) / len(sentences)
        checks.at_least("short_sentences", mean, rules.min_mean_sentence_chars)
        checks.at_most("long_sentences", mean, rules.max_mean_sentence_chars)
    chars = [ch for ch in sample[:CJK_ANALYSIS_CHARS] if not ch.isspace()]
    _ngram_repetition(checks, chars, rules.cjk_top_ngram_max, rules.cjk_dup_ngram_max)


def _ngram_repetition(
    checks: _Checks,
    units: list[str],
    top_max: tuple[tuple[int, float], ...],
    dup_max: tuple[tuple[int, float], ...],
) -> None:
    """Gopher's repetition rules over words (or characters for CJK), vectorised with numpy.

    top n-gram: share of characters taken by the most frequent n-gram; duplicated n-grams: share of
    characters covered by n-grams that occur more than once. n-grams are compared by a 64-bit
    polynomial hash, built for n from the hash for n - 1."""
    if not units:
        return
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(u, len(index)) + 1 for u in units), dtype=np.uint64, count=len(units))
    lengths = np.fromiter((len(u) for u in units), dtype=np.int64, count=len(units))
    total = int(lengths.sum())
    limits = {n: ("top", limit) for n, limit in top_max} | {n: ("dup", limit) for n, limit in dup_max}
    hashes = ids.copy()
    gram_lengths = lengths.copy()
    with np.errstate(over="ignore"):
        for n in range(2, max(limits) + 1):
            if len(units) < n:
                return
            hashes = hashes[:-1] * _PRIME + ids[n - 1 :]
            gram_lengths = gram_lengths[:-1] + lengths[n - 1 :]
            if n not in limits:
                continue
            kind, limit = limits[n]
            _, first, inverse, counts = np.unique(
                hashes, return_index=True, return_inverse=True, return_counts=True
            )
            if kind == "top":
                best = int(np.argmax(counts))
                share = counts[best] * gram_lengths[first[best]] / total if counts[best] > 1 else 0.0
            else:
                starts = np.flatnonzero(counts[inverse] > 1)
                edges = np.zeros(len(units) + 1, dtype=np.int64)
                np.add.at(edges, starts, 1)
                np.add.at(edges, starts + n, -1)
                share = lengths[np.cumsum(edges[:-1]) > 0].sum() / total
            checks.at_most("repeated_ngrams", float(share), limit)
