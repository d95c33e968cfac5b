"""Quality filter: judges the prose of a document with the rules that fit its script.

The statistics read the prose lines only (`aifactory.text.prose`): code blocks, command lines, tables
and navigation lines are kept in the stored text but left out of word, repetition and stop-word
counts, so a manual with shell examples is judged by its sentences. The prose is then split by
script: lines written mostly in Japanese or Chinese characters form the CJK part, the others the
spaced part, and each part that is a real share of the prose (MINOR_PART_SHARE) is judged by its own
rules. So a Japanese manual with English paragraphs, paths and commands is judged as Japanese where
it is Japanese, and spam hidden in either part still fails.

For the whole page: length, garbled text (U+FFFD), link lists, placeholder text, repeated lines and
consent/sign-in/error walls. Spaced part: Gopher's quality and repetition rules and FineWeb's line
punctuation (datatrove's defaults; the duplicated n-gram limits doubled, see QualityRules), plus the
share of distinct words. CJK part: character rules after the Swallow corpus and FineWeb-2 (hiragana
and katakana shares of the Japanese characters, sentence length, n-gram repetition over script-run
words), distinct words and sentence endings. Repetition is measured per window of WINDOW_WORDS words.
docs/quality.md lists every rule with its threshold and where it comes from.

Every document gets a `quality_score` in [0, 1] (how comfortably it passes, used to weight sampling)
and, when rejected, the first rule it failed as `reason`, with the measured value and the threshold
(`QualityVerdict.failed`); `checks` lists every rule evaluated, for `aifactory explain`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from aifactory.text.hashing import PRIME, word_hashes
from aifactory.text.language import CJK_LANGUAGES
from aifactory.text.prose import PROSE, Line, Prose, classify_text

ANALYSIS_CHARS = 30_000  # statistics on a sample of the prose: enough to see spam, bounded in time
REPETITION_CHARS = 12_000  # n-gram statistics: a page's repetitiveness shows in its first part
CJK_ANALYSIS_CHARS = 5_000  # CJK n-gram statistics: about as many words as REPETITION_CHARS of English
WINDOW_WORDS = 400  # repetition is measured per window of this many words (a short web page)
MIN_UNIQUE_WORDS = 100  # a shorter text says little about its vocabulary (it is all distinct words)
MINOR_PART_SHARE = 0.25  # a script part this small rides along with the main part, unjudged
MIN_LINES_FOR_RATIOS = 5  # line shares (bullets, ellipses, punctuation) of fewer lines mean nothing
STOP_WORDS_EN = {"the", "be", "to", "of", "and", "that", "have", "with"}
TERMINAL = tuple(".!?\"'。｡！？」』)”:;")
# Words of template text nobody replaced (the Lorem ipsum filler's own words, which appear in no real
# text, and the Japanese dummy-text phrases); a page may mention them once or twice, not be made of them.
PLACEHOLDERS = re.compile(
    r"\b(?:lorem|ipsum|consectetur|adipiscing|eiusmod|incididunt)\b|placeholder text"
    r"|ダミーテキスト|テキストが入ります|ここに本文|ここに見出し",
    re.IGNORECASE,
)
# Phrases of consent, sign-in and error walls: C4 drops such lines; here a page made of them goes.
# Whole phrases, not words: a manual explains login shells and HTTP cookies.
BOILERPLATE = re.compile(
    r"(?:we|this (?:web)?site) uses? cookies|accept (?:all )?cookies|cookie (?:policy|settings|preferences)"
    r"|by continuing to (?:use|browse)|enable javascript|javascript is (?:disabled|required)"
    r"|privacy policy|terms of (?:use|service)|all rights reserved|(?:sign|log) in to (?:continue|read|view)"
    r"|you must be logged in|create (?:an|your) account|subscribe to (?:our|the) newsletter"
    r"|access denied|page not found"
    r"|(?:cookie|クッキー)(?:を|の)(?:使用|利用)|javascriptを有効|プライバシーポリシー|利用規約|無断転載"
    r"|ログインしてください|会員登録|ページが見つかりません|お探しのページ",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+", re.UNICODE)
_REAL_WORD = re.compile(r"(?<!\S)\S*[^\W_]\S*")  # a whitespace-separated word with a letter or digit
_ALPHA_WORD = re.compile(r"(?<!\S)\S*[^\W\d_]\S*")  # ... with a letter
_ALNUM = re.compile(r"[^\W_]")
_SENTENCE = re.compile(r"[^。．！？!?\n]+[。．！？!?]?")
# The character before a Japanese full stop, when it is Japanese: kana or a closing bracket (a
# predicate or a quotation), or kanji/katakana (a noun). Sentences ending in a code word do not count.
_SENTENCE_END = re.compile(r"([\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf\u3005」』）)】])[。！？]")
_HIRAGANA = re.compile(r"[\u3040-\u309f]")
_KATAKANA = re.compile(r"[\u30a0-\u30ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")
_CJK = re.compile(r"[\u3040-\u30ff\uff66-\uff9f\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")
# Word-like units of Japanese without a dictionary: runs of one script (漢字, カタカナ, ひらがな) and
# Latin words. 参照してください is 参照 + してください: coarser than a morphological analyser's words,
# so n-grams of them are at least as specific as FineWeb-2's.
_CJK_WORD = re.compile(
    r"[\u3040-\u309f]+|[\u30a0-\u30ff\uff66-\uff9f]+|[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\u3005]+"
    r"|[A-Za-z0-9\u00c0-\u024f]+"
)
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]")


@dataclass(frozen=True)
class QualityRules:
    """Thresholds; the defaults are the published ones (Gopher, FineWeb, FineWeb-2, Swallow) unless
    a comment says why not."""

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
    min_unique_words: float = 0.2  # distinct words per window of WINDOW_WORDS (spaced part)
    max_link_share: float = 0.5  # a page whose prose is mostly link text is a link list or a menu
    max_boilerplate_lines: float = 0.3  # lines with consent/sign-in/error phrases
    max_placeholder_words: int = 2  # a page may mention Lorem ipsum; above this many words...
    max_placeholder_per_1000_chars: float = 1.0  # ...the words may not be this dense (filler is)
    max_replacement_chars: float = 0.01  # U+FFFD from undecodable bytes: garbled text
    top_ngram_max: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # Gopher's duplicated n-gram limits doubled: reference manuals are formulaic by design (every entry
    # of an API says "Return ..., or NULL on failure."), and measure up to 0.3 where Gopher allows
    # 0.15; templated spam measures 0.6-0.9, and fails the vocabulary rule besides.
    dup_ngram_max: tuple[tuple[int, float], ...] = (
        (5, 0.30),
        (6, 0.28),
        (7, 0.26),
        (8, 0.24),
        (9, 0.22),
        (10, 0.20),
    )
    # Japanese/Chinese, character based, on the CJK part
    min_cjk_chars: int = 80  # FineWeb-2's 50 Japanese words are about 80 characters
    min_hiragana_ratio: float = 0.2  # of the Japanese characters (Swallow: 0.2 of all characters)
    max_katakana_ratio: float = 0.5  # of the Japanese characters (Swallow)
    min_cjk_unique_words: float = 0.25  # distinct words per window (CJK words are script runs)
    min_verb_endings: float = 0.5  # Japanese sentences that end in a predicate, not a bare noun
    min_mean_sentence_chars: float = 10.0
    max_mean_sentence_chars: float = 150.0
    # FineWeb-2's Japanese thresholds, which are for word n-grams; the words here are script runs
    # (see _CJK_WORD). Over single characters they reject every long Japanese manual: パッケージ is
    # itself a 5-gram and ではありません an 8-gram, and repeating a term or a verb ending is not spam.
    cjk_top_ngram_max: tuple[tuple[int, float], ...] = ((2, 0.239), (3, 0.196), (4, 0.172))
    cjk_dup_ngram_max: tuple[tuple[int, float], ...] = (
        (5, 0.243),
        (6, 0.225),
        (7, 0.207),
        (8, 0.19),
        (9, 0.175),
        (10, 0.159),
    )


@dataclass(frozen=True)
class Check:
    """One rule evaluated on one document: the measured value against the threshold."""

    rule: str  # the reason a document failing it is rejected with
    value: float
    threshold: float
    bound: str  # "min" (value must be at least the threshold) or "max" (at most)
    part: str = "all"  # which prose it read: all, spaced or cjk
    detail: str = ""  # e.g. which n-gram length

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.bound == "min" else self.value <= self.threshold

    @property
    def where(self) -> str:
        """Which part of the prose and which variant of the rule, e.g. "cjk dup_5gram"."""
        return " ".join(filter(None, (self.part if self.part != "all" else "", self.detail)))


@dataclass
class QualityVerdict:
    score: float
    reason: str | None  # None = accepted
    stats: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.reason is None

    @property
    def failed(self) -> Check | None:
        """The check that decided the rejection (its value and threshold are recorded)."""
        return next((check for check in self.checks if not check.passed), None)


class _Checks:
    """Collects rule outcomes: the first failure is the reason; margins make the score."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.margins: list[float] = []
        self.stats: dict[str, float] = {}
        self.checks: list[Check] = []
        self.part = "all"

    def at_most(self, name: str, value: float, limit: float, detail: str = "") -> bool:
        self._record(Check(name, round(float(value), 4), limit, "max", self.part, detail))
        self.margins.append(max(0.0, min(1.0, 1.0 - value / limit)) if limit > 0 else 1.0)
        return value <= limit

    def at_least(self, name: str, value: float, limit: float, detail: str = "") -> bool:
        self._record(Check(name, round(float(value), 4), limit, "min", self.part, detail))
        self.margins.append(max(0.0, min(1.0, (value - limit) / limit)) if limit > 0 else 1.0)
        return value >= limit

    def _record(self, check: Check) -> None:
        key = f"{check.part}.{check.rule}" if check.part != "all" else check.rule
        if check.detail:
            key += f".{check.detail}"
        self.stats[key] = check.value
        self.checks.append(check)
        if not check.passed and self.reason is None:
            self.reason = check.rule

    def verdict(self, length_bonus: float) -> QualityVerdict:
        base = sum(self.margins) / len(self.margins) if self.margins else 0.0
        score = 0.7 * base + 0.3 * length_bonus
        if self.reason is not None:
            score = min(score, 0.3)  # a rejected document never outranks an accepted one
        return QualityVerdict(round(score, 4), self.reason, self.stats, self.checks)


def assess_quality(
    text: str, language: str, rules: QualityRules | None = None, prose: Prose | None = None
) -> QualityVerdict:
    """Judge `text` (detected language `language`); `prose` gives its lines' kinds when the extractor
    knows them (HTML), else the lines are classified here."""
    rules = rules or QualityRules()
    checks = _Checks()
    if not text.strip():
        checks.at_least("empty", 0, 1)
        return checks.verdict(0.0)
    if not checks.at_least("too_short", len(text), rules.min_chars):
        return checks.verdict(0.0)
    head = text[:ANALYSIS_CHARS]
    checks.at_most("garbled_text", head.count("\ufffd") / len(head), rules.max_replacement_chars)
    prose = prose if prose is not None else classify_text(text)
    checks.at_most("link_list", prose.link_share(), rules.max_link_share)
    lines = _sample([line for line in prose.of_kind(PROSE) if _ALNUM.search(line.words_text)])
    if not checks.at_least("no_prose", len(lines), 1):
        return checks.verdict(0.0)
    prose_head = "\n".join(line.text for line in lines)  # Lorem ipsum in a code example is fine
    placeholders = len(PLACEHOLDERS.findall(prose_head))
    density = 1000 * placeholders / len(prose_head) if placeholders > rules.max_placeholder_words else 0.0
    checks.at_most("placeholder_text", density, rules.max_placeholder_per_1000_chars)
    _line_rules(checks, [line.text for line in lines], rules)
    # Each distinct line once from here on: a repeated line is the repeated-lines rule's business, and
    # reference pages repeat short formulas ("New in version 3.2.", "Availability: Unix.") under every
    # entry, which would otherwise count as repeated n-grams.
    cjk_lines, spaced_lines = _split_by_script(list({line.text: line for line in lines}.values()))
    cjk_chars = sum(len(line.text) for line in cjk_lines)
    spaced_chars = sum(len(line.text) for line in spaced_lines)
    total = cjk_chars + spaced_chars
    cjk_first = cjk_chars >= spaced_chars
    parts = [("cjk", cjk_lines, cjk_chars), ("spaced", spaced_lines, spaced_chars)]
    for index, (part, part_lines, chars) in enumerate(parts if cjk_first else parts[::-1]):
        main = index == 0
        if not main and chars < MINOR_PART_SHARE * total:
            continue
        checks.part = part
        if part == "cjk":
            _cjk_rules(checks, part_lines, language, rules, main)
        else:
            _spaced_rules(checks, part_lines, language, rules, main)
    checks.part = "all"
    return checks.verdict(length_bonus=min(1.0, len(text) / 2000))


def _sample(lines: list[Line], limit: int = ANALYSIS_CHARS) -> list[Line]:
    out, size = [], 0
    for line in lines:
        if size >= limit:
            break
        out.append(line)
        size += len(line.text) + 1
    return out


def _split_by_script(lines: list[Line]) -> tuple[list[Line], list[Line]]:
    """Lines written mostly in CJK characters, and the others. A Japanese sentence with a command
    name or a path in it is still Japanese: the test is on letters, CJK against Latin/Greek/Cyrillic."""
    cjk, spaced = [], []
    for line in lines:
        words = line.words_text
        han_kana = len(_CJK.findall(words))
        if han_kana and han_kana >= 0.3 * (han_kana + len(_LATIN_LETTER.findall(words))):
            cjk.append(line)
        else:
            spaced.append(line)
    return cjk, spaced


def _line_rules(checks: _Checks, lines: list[str], rules: QualityRules) -> None:
    counts = Counter(lines)
    duplicated = sum(n for n in counts.values() if n > 1) - sum(1 for n in counts.values() if n > 1)
    checks.at_most("repeated_lines", duplicated / len(lines), rules.max_dup_line_frac)
    boilerplate = sum(1 for line in lines if BOILERPLATE.search(line))
    checks.at_most("boilerplate", boilerplate / len(lines), rules.max_boilerplate_lines)


def _spaced_rules(checks: _Checks, part: list[Line], language: str, rules: QualityRules, main: bool) -> None:
    # Regular expressions and map() keep the per-word work in C: this runs on every page.
    lines = [line.words_text for line in part]  # word statistics: inline code left out
    sample = "\n".join(lines)
    words = sample.split()
    real_words = _REAL_WORD.findall(sample)  # whitespace-separated words with a letter or digit
    if main:
        if not checks.at_least("too_few_words", len(real_words), rules.min_words):
            return
    elif len(real_words) < rules.min_words:
        return  # too little to measure: a minor part of a few words is not judged
    mean_length = sum(map(len, real_words)) / len(real_words)
    checks.at_least("short_words", mean_length, rules.min_avg_word_length)
    checks.at_most("long_words", mean_length, rules.max_avg_word_length)
    symbols = sample.count("#") + sample.count("...") + sample.count("…")
    checks.at_most("symbols", symbols / len(words), rules.max_symbol_word_ratio)
    if len(lines) >= MIN_LINES_FOR_RATIOS:
        bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-", "*", "·")))
        checks.at_most("bullet_lines", bullets / len(lines), rules.max_bullet_lines_ratio)
        ellipsis = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
        checks.at_most("ellipsis_lines", ellipsis / len(lines), rules.max_ellipsis_lines_ratio)
        punct = sum(1 for line in lines if line.rstrip().endswith(TERMINAL))
        checks.at_least("no_punctuation", punct / len(lines), rules.min_line_punct_ratio)
    alpha = len(_ALPHA_WORD.findall(sample))
    checks.at_least("non_alpha_words", alpha / len(words), rules.min_alpha_words_ratio)
    lowered = sample.lower()
    if language == "en" or language in CJK_LANGUAGES:  # the spaced part of a Japanese page is English
        stop = sum(map(STOP_WORDS_EN.__contains__, lowered.split()))
        checks.at_least("no_stop_words", stop, rules.min_stop_words)
    # Repetition with the inline code in: without it, "returns `x`" and "returns `y`" would be equal.
    tokens = _WORD.findall("\n".join(line.text for line in part)[:REPETITION_CHARS].lower())
    if not tokens:
        return
    ids = word_hashes(" ".join(tokens))  # equal words, equal 64-bit ids
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    _ngram_repetition(checks, ids, lengths, rules.top_ngram_max, rules.dup_ngram_max, rules.min_unique_words)


def _cjk_rules(checks: _Checks, part: list[Line], language: str, rules: QualityRules, main: bool) -> None:
    sample = "\n".join(line.words_text for line in part)
    hiragana = len(_HIRAGANA.findall(sample))
    katakana = len(_KATAKANA.findall(sample))
    han = len(_HAN.findall(sample))
    japanese = hiragana + katakana + han
    if main:
        if not checks.at_least("too_few_cjk_chars", japanese, rules.min_cjk_chars):
            return
    elif japanese < rules.min_cjk_chars:
        return
    if language == "ja" or hiragana + katakana >= 0.05 * japanese:  # kana: Japanese, not Chinese
        checks.at_least("low_hiragana", hiragana / japanese, rules.min_hiragana_ratio)
        checks.at_most("too_much_katakana", katakana / japanese, rules.max_katakana_ratio)
        # A Japanese sentence ends in its predicate, written in kana (です。した。ある。); strings of
        # nouns with a full stop (generated word salad, keyword lists) end in kanji or katakana.
        endings = _SENTENCE_END.findall("\n".join(line.text for line in part))
        verbs = sum(1 for end in endings if not (_HAN.match(end) or _KATAKANA.match(end)))
        if len(endings) >= MIN_LINES_FOR_RATIOS:
            checks.at_least("noun_endings", verbs / len(endings), rules.min_verb_endings)
    sentences = [s for s in _SENTENCE.findall(sample) if s.strip()]
    if sentences:
        mean = sum(map(len, sentences)) / len(sentences)
        checks.at_least("short_sentences", mean, rules.min_mean_sentence_chars)
        checks.at_most("long_sentences", mean, rules.max_mean_sentence_chars)
    units = _CJK_WORD.findall("\n".join(line.text for line in part)[:CJK_ANALYSIS_CHARS])
    if not units:
        return
    ids = word_hashes(" ".join(units))
    lengths = np.fromiter(map(len, units), dtype=np.int64, count=len(units))
    _ngram_repetition(
        checks, ids, lengths, rules.cjk_top_ngram_max, rules.cjk_dup_ngram_max, rules.min_cjk_unique_words
    )


def _ngram_repetition(
    checks: _Checks,
    ids: np.ndarray,
    lengths: np.ndarray,
    top_max: tuple[tuple[int, float], ...],
    dup_max: tuple[tuple[int, float], ...],
    min_unique: float,
) -> None:
    """Gopher's repetition rules, and the share of distinct words, measured on windows of WINDOW_WORDS
    words; the median over the windows is what is judged.

    Repetition grows with length: the longer the text, the more of its phrases occur twice, and
    Gopher's thresholds were set on web pages of a few hundred words. A 40-page manual chapter judged
    as a whole fails them for repeating its own terms; judged window by window it repeats no more
    than an article, while a spam page is repetitive in every window. Distinct words per window: real
    prose of 400 words uses well over a hundred different ones, keyword stuffing and word salad drawn
    from a small vocabulary a few dozen."""
    units = len(ids)
    windows = [(start, min(units, start + WINDOW_WORDS)) for start in range(0, units, WINDOW_WORDS)]
    if len(windows) > 1 and windows[-1][1] - windows[-1][0] < WINDOW_WORDS // 2:
        windows[-2:] = [(windows[-2][0], units)]  # a short tail joins the window before it
    shares: dict[str, list[float]] = {}
    unique: list[float] = []
    for start, end in windows:
        unique.append(len(np.unique(ids[start:end])) / max(1, end - start))
        for detail, share in _ngram_shares(ids[start:end], lengths[start:end], top_max, dup_max).items():
            shares.setdefault(detail, []).append(share)
    if units >= MIN_UNIQUE_WORDS:
        checks.at_least("low_vocabulary", float(np.median(unique)), min_unique)
    limits = {f"top_{n}gram": limit for n, limit in top_max} | {f"dup_{n}gram": limit for n, limit in dup_max}
    for detail, values in shares.items():
        checks.at_most("repeated_ngrams", float(np.median(values)), limits[detail], detail)


def _ngram_shares(
    ids: np.ndarray,
    lengths: np.ndarray,
    top_max: tuple[tuple[int, float], ...],
    dup_max: tuple[tuple[int, float], ...],
) -> dict[str, float]:
    """Gopher's repetition statistics over words (or CJK words), vectorised with numpy.

    `ids` identify the units (equal units, equal ids) and `lengths` are their lengths in characters.
    top n-gram: share of characters taken by the most frequent n-gram; duplicated n-grams: share of
    characters covered by n-grams that occur more than once. n-grams are compared by a 64-bit
    polynomial hash, built for n from the hash for n - 1."""
    units = len(ids)
    total = int(lengths.sum())
    out: dict[str, float] = {}
    if units == 0 or total == 0:
        return out
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
                break
            hashes = hashes[:-1] * PRIME + ids[n - 1 :]
            gram_lengths = gram_lengths[:-1] + lengths[n - 1 :]
            if n not in limits:
                continue
            kind, _limit = limits[n]
            detail = f"{kind}_{n}gram"
            if kind == "dup" and covered is not None and covered <= dup_floor:
                # A unit covered by a repeated (n+1)-gram is covered by a repeated n-gram, so the
                # share only falls as n grows: under the smallest limit, every longer n passes too.
                out[detail] = covered
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
            out[detail] = float(share)
    return out
