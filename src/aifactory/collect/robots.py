"""robots.txt (RFC 9309, parsed with protego) and the AI-training opt-out signals a polite crawler honours.

Two questions are answered here, and they are different:
- may we *fetch* a URL? robots.txt for our own product token (or `*`);
- may the page be used for *training*? Not if the site disallows the AI-training crawlers (GPTBot,
  CCBot, Google-Extended...), reserves text-and-data-mining rights (TDMRep: tdmrep.json, the
  `tdm-reservation` header or meta), says `Content-Usage: train-ai=n`, or marks the page `noai`
  (or `noindex`, conservatively) in a robots meta tag or X-Robots-Tag header.
A page can be fetchable yet not trainable: it is then fetched, stored and marked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from protego import Protego

ROBOTS_MAX_BYTES = 500 * 1024  # what RFC 9309 asks crawlers to parse at least, and Google parses at most
ROBOTS_TTL_SEC = 24 * 3600.0  # RFC 9309: do not use a cached robots.txt for more than 24 hours
TDMREP_PATH = "/.well-known/tdmrep.json"
TDMREP_MAX_BYTES = 64 * 1024

# Product tokens of AI-training crawlers and of the training opt-out tokens that fetch nothing.
AI_TRAINING_AGENTS = (
    "GPTBot",
    "ClaudeBot",
    "anthropic-ai",
    "CCBot",
    "Google-Extended",
    "Applebot-Extended",
    "Bytespider",
    "Meta-ExternalAgent",
    "cohere-ai",
)
NOT_TRAINABLE_DIRECTIVES = ("noai", "noindex")
TRAIN_AI_NO = re.compile(r"\btrain-ai\s*=\s*n(o)?\b", re.IGNORECASE)
CONTENT_USAGE_LINE = re.compile(r"^\s*content-usage\s*:\s*(.*?)\s*(#.*)?$", re.IGNORECASE | re.MULTILINE)
# X-Robots-Tag directives that take a value after a colon (not a "botname:" prefix).
VALUE_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def robots_url(origin: str) -> str:
    return origin + "/robots.txt"


@dataclass
class Robots:
    """One site's robots.txt as fetched: the HTTP status and the (size-limited) body."""

    status: int
    body: str = ""
    _parser: Protego | None = field(default=None, init=False, repr=False)
    _usage: list[tuple[str, bool]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if 200 <= self.status < 300 and self.body:
            try:
                self._parser = Protego.parse(self.body)
            except Exception:  # a robots.txt protego cannot read counts as no rules, like an empty file
                self._parser = None
            for match in CONTENT_USAGE_LINE.finditer(self.body):
                value = match.group(1)
                path, _, rule = value.partition(" ") if value.startswith("/") else ("/", "", value)
                self._usage.append((path, bool(TRAIN_AI_NO.search(rule))))

    def allows(self, url: str, token: str) -> bool:
        """Whether our crawler (product token `token`) may fetch `url`."""
        return self._parser is None or bool(self._parser.can_fetch(url, token))

    def crawl_delay(self, token: str) -> float | None:
        if self._parser is None:
            return None
        delay = self._parser.crawl_delay(token)
        rate = self._parser.request_rate(token)
        if rate is not None and rate.requests:
            delay = max(delay or 0.0, rate.seconds / rate.requests)
        return float(delay) if delay else None

    def ai_optout(self, url: str) -> str:
        """The reason `url` must not be trained on according to robots.txt, or ""."""
        if self._parser is not None:
            for agent in AI_TRAINING_AGENTS:
                if not self._parser.can_fetch(url, agent):
                    return f"robots.txt disallows {agent}"
        path = urlsplit(url).path or "/"
        matching = [(len(prefix), says_no) for prefix, says_no in self._usage if path.startswith(prefix)]
        if matching and max(matching)[1]:
            return "robots.txt Content-Usage train-ai=n"
        return ""


def robots_from_response(status: int, body: str) -> Robots | None:
    """RFC 9309: 2xx rules apply; 4xx means no robots.txt (all allowed); 5xx, 429 or no answer means
    the site is unreachable (None): treat it as disallowed for now and try again later."""
    if 200 <= status < 300:
        return Robots(status, body)
    if 400 <= status < 500 and status != 429:
        return Robots(status, "")
    return None


def tdm_reserved(tdmrep: str, url: str) -> bool:
    """Whether /.well-known/tdmrep.json reserves text-and-data-mining rights for `url`'s path.

    The file is a list of {"location": "/path/*", "tdm-reservation": 0|1}; the most specific matching
    location decides. An unreadable file reserves nothing."""
    if not tdmrep:
        return False
    try:
        rules = json.loads(tdmrep)
    except ValueError:
        return False
    if not isinstance(rules, list):
        return False
    path = urlsplit(url).path or "/"
    best: tuple[int, bool] | None = None
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("location"), str):
            continue
        pattern = rule["location"]
        regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\$", "$")
        if re.match(regex, path) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), str(rule.get("tdm-reservation", 0)) == "1")
    return bool(best and best[1])


def _robots_directives(value: str, token: str) -> set[str]:
    """Directives of one X-Robots-Tag / robots meta value that apply to us ("otherbot: noai" does not)."""
    directives: set[str] = set()
    applies = True
    for part in value.split(","):
        part = part.strip().lower()
        name, colon, rest = part.partition(":")
        if colon and name.strip() not in VALUE_DIRECTIVES:
            applies = name.strip() in (token.lower(), "*")  # a "botname:" prefix scopes what follows
            part = rest.strip()
        if applies and part:
            directives.update(part.split())
    return directives


def header_optouts(headers: Mapping[str, str], token: str) -> list[str]:
    """Training opt-outs a page's response headers declare."""
    reasons = []
    if headers.get("tdm-reservation", "").strip() == "1":
        reasons.append("tdm-reservation header")
    if TRAIN_AI_NO.search(headers.get("content-usage", "")):
        reasons.append("Content-Usage header train-ai=n")
    tagged = _robots_directives(headers.get("x-robots-tag", ""), token)
    reasons += [f"X-Robots-Tag {d}" for d in NOT_TRAINABLE_DIRECTIVES if d in tagged]
    return reasons


def meta_optouts(robots_meta: list[str], tdm_meta: str, token: str) -> list[str]:
    """Training opt-outs a page's HTML declares (<meta name=robots|our token ...>, tdm-reservation)."""
    reasons = []
    if tdm_meta.strip() == "1":
        reasons.append("tdm-reservation meta")
    directives: set[str] = set()
    for value in robots_meta:
        directives |= _robots_directives(value, token)
    reasons += [f"robots meta {d}" for d in NOT_TRAINABLE_DIRECTIVES if d in directives]
    return reasons


def meta_nofollow(robots_meta: list[str], token: str) -> bool:
    return any("nofollow" in _robots_directives(value, token) for value in robots_meta)
