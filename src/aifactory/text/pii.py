"""Masking of personal data in stored text: e-mail addresses, phone numbers, IP addresses.

A page with a contact address is still a good page, so PII is replaced in place (as FineWeb does),
never a reason to drop the document. The replacements are plausible text, so a model trained on the
corpus learns what such a thing looks like, not the real one.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
# International (+81 3-1234-5678), North American ((555) 123-4567) and Japanese (03-1234-5678,
# 090-1234-5678) shapes; digits must be grouped by separators so years and ids are left alone.
PHONE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{2,4}[ .-]\d{3,4}(?!\w)(?!\.\d)"
)


def mask_pii(text: str) -> tuple[str, int]:
    """Return the text with PII replaced, and how many replacements were made."""
    count = 0

    def replace(pattern: re.Pattern[str], value: str, text: str) -> str:
        nonlocal count
        text, n = pattern.subn(value, text)
        count += n
        return text

    if "@" in text:  # most pages have none: skip the scan
        text = replace(EMAIL, "email@example.com", text)
    text = replace(IPV4, "192.0.2.1", text)  # TEST-NET-1: documentation addresses
    text = replace(PHONE, "000-0000-0000", text)
    return text, count
