"""Which documents are validation, and how much each training document is sampled.

The split is a pure function of a document's URL, so it never moves as the corpus grows (the original
drew it from one RNG in corpus order: every new row shifted every later draw, and trained-on documents
leaked into validation). The parts of one long document (`url#part-2`, ...) share their page's key, so
a page is never half train, half validation. The weight is computed from what the index stores (source,
quality, domain), so a change of policy or of SOURCE_WEIGHT_* applies without rewriting any shard.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from aifactory.db.policies import Policy, resolve
from aifactory.settings import Settings

_PART_SUFFIX = re.compile(r"#part-\d+$")


def split_key(url: str) -> str:
    """The stable key a document's split is drawn from: its page URL, without the part suffix."""
    return _PART_SUFFIX.sub("", url)


def split_draw(url: str) -> float:
    """A uniform number in [0, 1) fixed by the URL (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(split_key(url).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# While a language has fewer validation tokens than DATASET_VAL_MIN_TOKENS_PER_LANGUAGE, this share of
# its documents (by the same URL draw) goes to validation instead of DATASET_VAL_FRACTION, so a language
# that is a small part of a small corpus still gets a validation set worth reading.
VAL_CATCH_UP_FRACTION = 0.2


def is_validation(
    url: str, fraction: float, val_tokens: int, max_val_tokens: int, min_val_tokens: int = 0
) -> bool:
    """Validation when the URL's draw is below `fraction` (VAL_CATCH_UP_FRACTION while the document's
    language has fewer than `min_val_tokens`) and the language's validation set is not full yet.
    `val_tokens` is what the document's language has so far. Decided once per document, in id order,
    so two builds of the same documents give the same split."""
    if val_tokens >= max_val_tokens:
        return False
    threshold = max(fraction, VAL_CATCH_UP_FRACTION) if val_tokens < min_val_tokens else fraction
    return split_draw(url) < threshold


def quality_weight(settings: Settings, quality: np.ndarray) -> np.ndarray:
    return settings.quality_weight_floor + settings.quality_weight_boost * np.asarray(quality, np.float64)


def document_weights(
    settings: Settings,
    policies: list[Policy],
    sources: list[str],
    domains: list[str],
    source_codes: np.ndarray,
    domain_codes: np.ndarray,
    quality: np.ndarray,
) -> np.ndarray:
    """Sampling weight per document = SOURCE_WEIGHT_<source> x quality weight x policy base_weight.

    Policies are resolved once per distinct (domain, source) pair, not once per document."""
    source_weight = np.array([settings.source_weight(name) for name in sources] or [1.0], np.float64)
    pairs = domain_codes.astype(np.int64) * 256 + source_codes.astype(np.int64)
    unique, inverse = np.unique(pairs, return_inverse=True)
    base = np.array(
        [
            resolve(policies, domains[int(pair) // 256], sources[int(pair) % 256]).base_weight
            for pair in unique
        ],
        np.float64,
    )
    weights = source_weight[source_codes] * quality_weight(settings, quality) * base[inverse.reshape(-1)]
    return np.maximum(weights, 0.0)
