"""Polynomial hashing of words and n-grams in numpy, shared by MinHash and the repetition rules.

Everything is modulo 2^64 (numpy's wrapping uint64 arithmetic) with a fixed odd prime, so results are
the same in every process and on every node, unlike Python's randomised `hash()`.
"""

from __future__ import annotations

import numpy as np

PRIME = np.uint64(1_000_003)
PRIME_INVERSE = np.uint64(pow(1_000_003, -1, 2**64))  # odd numbers are invertible modulo 2^64


class _Powers:
    """P^i and P^-i modulo 2^64 (P is odd, hence invertible), grown on demand."""

    def __init__(self) -> None:
        self.up = np.ones(1, dtype=np.uint64)
        self.down = np.ones(1, dtype=np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            self.up, self.down = _power_table(PRIME, size), _power_table(PRIME_INVERSE, size)
        return self.up[:n], self.down[:n]


def _power_table(base: np.uint64, size: int) -> np.ndarray:
    with np.errstate(over="ignore"):  # wrapping products are the point: arithmetic mod 2^64
        rest = np.cumprod(np.full(size - 1, base, dtype=np.uint64))
    return np.concatenate((np.ones(1, dtype=np.uint64), rest))


_POWERS = _Powers()


def word_hashes(simple: str) -> np.ndarray:
    """A 64-bit polynomial hash of each space-separated word, without a Python loop over words.

    With S the prefix sums of code[j]·P^j, the word [a, b) hashes to (S[b] - S[a])·P^-a."""
    codes = np.frombuffer(simple.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = len(codes)
    if n == 0:
        return codes
    up, down = _POWERS.get(n)
    spaces = np.flatnonzero(codes == 32)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [n]))
    with np.errstate(over="ignore"):
        prefix = np.concatenate((np.zeros(1, dtype=np.uint64), np.cumsum(codes * up, dtype=np.uint64)))
        return (prefix[ends] - prefix[starts]) * down[starts]
