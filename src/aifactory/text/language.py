"""Language identification with py3langid, whose model ships inside its wheel (no download).

Japanese written mostly in kanji is sometimes taken for Chinese by character statistics alone; kana
(hiragana/katakana) occur only in Japanese, so a text with enough kana is Japanese whatever the
model says. Short or mixed texts get a low confidence rather than a confident wrong label.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from py3langid import langid

_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_LETTER = re.compile(r"[^\W\d_]")
CJK_LANGUAGES = {"ja", "zh"}  # written without spaces between words
SAMPLE_CHARS = 800  # a paragraph decides reliably; classifying megabytes adds nothing


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1 where the model has one ("en", "ja", ...); "und" when undetermined
    confidence: float


@functools.lru_cache(maxsize=1)
def _identifier() -> langid.LanguageIdentifier:
    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> Language:
    sample = text[:SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    if letters < 10:
        return Language("und", 0.0)
    kana = len(_KANA.findall(sample))
    han = len(_HAN.findall(sample))
    if kana >= 5 and kana / max(1, kana + han) >= 0.1:
        return Language("ja", round(min(1.0, 0.9 + kana / letters), 4))
    code, probability = _identifier().classify(sample)
    if code in ("zh", "wuu", "yue") and kana:
        code = "ja"
    # The model is over-confident on tiny inputs; scale confidence by how much text it saw.
    confidence = float(probability) * min(1.0, letters / 40)
    return Language(code, round(confidence, 4))


def language_allowed(code: str, allowed: list[str]) -> bool:
    """TRAIN_LANG_ONLY: an empty list allows every language."""
    return not allowed or code in allowed
