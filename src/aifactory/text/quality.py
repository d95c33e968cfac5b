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

from aifactory.text.hashing import PRIME, word_hashes
from aifactory.text.language import CJK_LANGUAGES

ANALYSIS_CHARS = 30_000  # statistics on a sample: enough to see spam, bounded in time
REPETITION_CHARS = 15_000  # n-gram statistics: a page's repetitiveness shows in its first part
CJK_ANALYSIS_CHARS = 8_000  # character n-grams: one unit per character, so a smaller sample
STOP_WORDS_EN = {"the", "be", "to", "of", "and", "that", "have", "with"}
TERMINAL = tuple(".!?\"'。｡！？」』)”")
_WORD = re.compile(r"\w+", re.UNICODE)
_REAL_WORD = re.compile(r"(?<!\S)\S*[^\W_]\S*")  # a whitespace-separated word with a letter or digit
_ALPHA_WORD = re.compile(r"(?<!\S)\S*[^\W\d_]\S*")  # ... with a letter
_SPACE = re.compile(r"\s")
_SENTENCE = re.compile(r"[^。．！？!?\n]+[。．！？!?]?")
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
    # Regular expressions and map() keep the per-word work in C: this runs on every page.
    words = sample.split()
    real_words = _REAL_WORD.findall(sample)  # whitespace-separated words with a letter or digit
    checks.at_least("too_few_words", len(real_words), rules.min_words)
    if not real_words:
        return
    mean_length = sum(map(len, real_words)) / len(real_words)
    checks.at_least("short_words", mean_length, rules.min_avg_word_length)
    checks.at_most("long_words", mean_length, rules.max_avg_word_length)
    symbols = sample.count("#") + sample.count("...") + sample.count("…")
    checks.at_most("symbols", symbols / len(words), rules.max_symbol_word_ratio)
    bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-", "*", "·")))
    checks.at_most("bullet_lines", bullets / len(lines), rules.max_bullet_lines_ratio)
    ellipsis = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
    checks.at_most("ellipsis_lines", ellipsis / len(lines), rules.max_ellipsis_lines_ratio)
    alpha = len(_ALPHA_WORD.findall(sample))
    checks.at_least("non_alpha_words", alpha / len(words), rules.min_alpha_words_ratio)
    lowered = sample.lower()
    if language == "en":
        stop = sum(map(STOP_WORDS_EN.__contains__, lowered.split()))
        checks.at_least("no_stop_words", stop, rules.min_stop_words)
    punct = sum(1 for line in lines if line.rstrip().endswith(TERMINAL))
    checks.at_least("no_punctuation", punct / len(lines), rules.min_line_punct_ratio)
    tokens = _WORD.findall(lowered[:REPETITION_CHARS])
    if not tokens:
        return
    ids = word_hashes(" ".join(tokens))  # equal words, equal 64-bit ids
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    _ngram_repetition(checks, ids, lengths, rules.top_ngram_max, rules.dup_ngram_max)


def _cjk_rules(checks: _Checks, sample: str, language: str, rules: QualityRules) -> None:
    total = max(1, len(sample) - len(_SPACE.findall(sample)))
    hiragana = len(_HIRAGANA.findall(sample))
    katakana = len(_KATAKANA.findall(sample))
    han = len(_HAN.findall(sample))
    checks.at_least("not_enough_cjk", (hiragana + katakana + han) / total, rules.min_cjk_ratio)
    if language == "ja":
        checks.at_least("low_hiragana", hiragana / total, rules.min_hiragana_ratio)
        checks.at_most("too_much_katakana", katakana / total, rules.max_katakana_ratio)
    sentences = [s for s in _SENTENCE.findall(sample) if s.strip()]
    if sentences:
        mean = sum(map(len, sentences)) / len(sentences)
        checks.at_least("short_sentences", mean, rules.min_mean_sentence_chars)
        checks.at_most("long_sentences", mean, rules.max_mean_sentence_chars)
    chars = _SPACE.sub("", sample[:CJK_ANALYSIS_CHARS])
    ids = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    _ngram_repetition(
        checks, ids, np.ones(len(ids), dtype=np.int64), rules.cjk_top_ngram_max, rules.cjk_dup_ngram_max
    )


def _ngram_repetition(
    checks: _Checks,
    ids: np.ndarray,
    lengths: np.ndarray,
    top_max: tuple[tuple[int, float], ...],
    dup_max: tuple[tuple[int, float], ...],
) -> None:
    """Gopher's repetition rules over words (or characters for CJK), vectorised with numpy.

    `ids` identify the units (equal units, equal ids) and `lengths` are their lengths in characters.
    top n-gram: share of characters taken by the most frequent n-gram; duplicated n-grams: share of
    characters covered by n-grams that occur more than once. n-grams are compared by a 64-bit
    polynomial hash, built for n from the hash for n - 1."""
    units = len(ids)
    total = int(lengths.sum())
    if units == 0 or total == 0:
        return
    ids = ids + np.uint64(1)  # no zero ids: a zero would vanish from the polynomial
    limits = {n: ("top", limit) for n, limit in top_max} | {n: ("dup", limit) for n, limit in dup_max}
    dup_floor = min((limit for n, limit in dup_max), default=0.0)
    shortest_dup = min((n for n, _ in dup_max), default=0)
    covered: float | None = None  # duplicated share for the shortest n, a bound for every longer n
    hashes = ids.copy()
    gram_lengths = lengths.copy()
    with np.errstate(over="ignore"):
        for n in range(2, max(limits) + 1):
            if units < n:
                return
            hashes = hashes[:-1] * PRIME + ids[n - 1 :]
            gram_lengths = gram_lengths[:-1] + lengths[n - 1 :]
            if n not in limits:
                continue
            kind, limit = limits[n]
            if kind == "dup" and covered is not None and covered <= dup_floor:
                # A unit covered by a repeated (n+1)-gram is covered by a repeated n-gram, so the
                # share only falls as n grows: under the smallest limit, every longer n passes too.
                checks.at_most("repeated_ngrams", covered, limit)
                continue
            # Group equal hashes by sorting once (what np.unique does, minus what is not needed).
            order = np.argsort(hashes)
            ordered = hashes[order]
            starts_group = np.empty(len(ordered), dtype=bool)
            starts_group[0] = True
            np.not_equal(ordered[1:], ordered[:-1], out=starts_group[1:])
            group = np.cumsum(starts_group) - 1
            counts = np.bincount(group)
            if kind == "top":
                best = int(np.argmax(counts))
                first = order[np.flatnonzero(starts_group)[best]]
                share = counts[best] * gram_lengths[first] / total if counts[best] > 1 else 0.0
            else:
                repeated = np.empty(len(ordered), dtype=bool)
                repeated[order] = counts[group] > 1
                starts = np.flatnonzero(repeated)
                edges = np.zeros(units + 1, dtype=np.int64)
                np.add.at(edges, starts, 1)
                np.add.at(edges, starts + n, -1)
                share = lengths[np.cumsum(edges[:-1]) > 0].sum() / total
                if n == shortest_dup:
                    covered = float(share)
            checks.at_most("repeated_ngrams", float(share), limit)
