"""MinHash signatures and LSH band keys for near-duplicate detection, vectorised with numpy.

FineWeb's parameters by default: 5-gram shingles (words for space-separated languages, characters
for Japanese/Chinese, where a "word" would be a whole sentence), 112 hash functions in 14 bands of
8. Two documents whose shingle sets have Jaccard similarity 0.8 share at least one band with
probability 0.92; at 0.5, 0.05.

Shingles are hashed with a 64-bit polynomial over per-unit ids (a polynomial hash of each word,
or the code point of each character), all in numpy; the permutations are multiply-shift hashes
((a·x + b) mod 2^64) >> 32 applied to the whole shingle array at once. Everything is seeded with
constants, so every node computes the same signature for the same text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from aifactory.text.hashing import PRIME as _PRIME
from aifactory.text.hashing import word_hashes
from aifactory.text.language import CJK_LANGUAGES

NUM_PERM = 112
BANDS = 14
ROWS = 8
NGRAM = 5
_rng = np.random.default_rng(20240613)
_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)  # odd multipliers
_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
_BAND_SEED = np.arange(1, BANDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = NUM_PERM
    bands: int = BANDS
    ngram: int = NGRAM

    def __post_init__(self) -> None:
        if self.num_perm > NUM_PERM or self.num_perm % self.bands:
            raise ValueError(f"num_perm must be a multiple of bands and at most {NUM_PERM}")

    def signature(self, text: str, language: str) -> np.ndarray:
        """uint32[num_perm]; an empty text gets the all-max signature (it matches nothing real)."""
        shingles = shingle_hashes(text, language, self.ngram)
        if shingles.size == 0:
            return np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        with np.errstate(over="ignore"):
            mixed = shingles[:, None] * _A[None, : self.num_perm] + _B[None, : self.num_perm]
        return (mixed.min(axis=0) >> np.uint64(32)).astype(np.uint32)

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One signed 64-bit key per band (fits a BIGINT column on both databases)."""
        rows = self.num_perm // self.bands
        bands = signature.astype(np.uint64).reshape(self.bands, rows)
        with np.errstate(over="ignore"):
            keys = _BAND_SEED[: self.bands].copy()
            for column in range(rows):
                keys = keys * _PRIME + bands[:, column]
        return [int(k) for k in keys.view(np.int64)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the share of hash functions whose minima agree."""
    return float(np.mean(a == b))


_ASCII_SIMPLE = str.maketrans(
    {ch: " " for ch in map(chr, range(128)) if not ch.isalnum() and not ch.isspace() and ch != "_"}
    | {str(d): "0" for d in range(10)}
)


def simplify(text: str, language: str = "") -> str:
    """FineWeb's `simplify_text`: lower case, no accents, no punctuation, every digit a 0.

    Accents are stripped only outside Japanese/Chinese, where decomposition would turn が into か."""
    text = text.lower()
    if text.isascii():  # the common case, all in C: one translate, one split
        return " ".join(text.translate(_ASCII_SIMPLE).split())
    if language not in CJK_LANGUAGES:
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(_DIGIT.sub("0", _PUNCT.sub(" ", text)).split())


def shingle_hashes(text: str, language: str, n: int = NGRAM) -> np.ndarray:
    """Unique 64-bit hashes of the document's n-gram shingles."""
    simple = simplify(text, language)
    if language in CJK_LANGUAGES:
        units = np.frombuffer(simple.replace(" ", "").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    else:
        units = word_hashes(simple)
    if units.size == 0:
        return units
    if units.size < n:  # a very short text is one shingle
        n = int(units.size)
    hashes = units[: units.size - n + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            hashes = hashes * _PRIME + units[k : units.size - n + 1 + k]
    return np.unique(hashes)
