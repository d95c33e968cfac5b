"""robots.txt (RFC 9309, parsed with protego) and the AI-training opt-out signals a polite crawler honours.

Two questions are answered here, and they are different:
- may we *fetch* a URL? robots.txt for our own product token (or `*`);
- may the page be used for *training*? Not if the site disallows the AI-training crawlers (GPTBot,
  CCBot, Google-Extended...), reserves text-and-data-mining rights (TDMRep: tdmrep.json, the
  `tdm-reservation` header or meta), says `Content-Usage: train-ai=n`, or marks the page `noai`
  (or `noindex`, conservatively) in a robots meta tag or X-Robots-Tag header.
A page can be fetchable yet not trainable: it is then fetched, stored and marked.

Everything here reads text a site controls, so every parser is linear in its input: lines are split
and compared, wildcards matched piece by piece with `str.find`, and no regular expression that can
backtrack ever meets an unbounded string. A robots.txt is parsed once per fetch and kept parsed
(RobotsCache), not parsed again for every lease of its host.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from protego import Protego

ROBOTS_MAX_BYTES = 500 * 1024  # what RFC 9309 asks crawlers to parse at least, and Google parses at most
ROBOTS_TTL_SEC = 24 * 3600.0  # RFC 9309: do not use a cached robots.txt for more than 24 hours
TDMREP_PATH = "/.well-known/tdmrep.json"
TDMREP_MAX_BYTES = 64 * 1024
MAX_TDM_RULES = 1000

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
# Applied to one Content-Usage value (a header of at most 8 KB, or one robots.txt line): the only
# repetition is bounded by the literal `=`, so there is nothing to backtrack over.
TRAIN_AI_NO = re.compile(r"\btrain-ai[ \t]*=[ \t]*no?\b", re.IGNORECASE)
MAX_LINE_CHARS = 4096  # of a robots.txt line looked at for Content-Usage
CACHE_ENTRIES = 2048
# X-Robots-Tag directives that take a value after a colon (not a "botname:" prefix).
VALUE_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def robots_url(origin: str) -> str:
    return origin + "/robots.txt"


def content_usage_lines(body: str) -> list[tuple[str, bool]]:
    """(path prefix, says train-ai=n) of each `Content-Usage:` line of a robots.txt, in one pass."""
    usage = []
    for line in body.splitlines():
        line = line.partition("#")[0].strip()
        name, colon, value = line[:MAX_LINE_CHARS].partition(":")
        if not colon or name.strip().lower() != "content-usage":
            continue
        value = value.strip()
        path, _, rule = value.partition(" ") if value.startswith("/") else ("/", "", value)
        usage.append((path, bool(TRAIN_AI_NO.search(rule))))
    return usage


@dataclass
class Robots:
    """One site's robots.txt as fetched: the HTTP status and the (size-limited) body, parsed.

    The body itself is not kept once parsed (a parsed file may stay in RobotsCache a long while)."""

    status: int
    body: str = field(default="", repr=False)
    _parser: Protego | None = field(default=None, init=False, repr=False)
    _usage: list[tuple[str, bool]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if 200 <= self.status < 300 and self.body:
            try:
                self._parser = Protego.parse(self.body)
            except Exception:  # a robots.txt protego cannot read counts as no rules, like an empty file
                self._parser = None
            self._usage = content_usage_lines(self.body)
        self.body = ""

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
    for rule in rules[:MAX_TDM_RULES]:
        if not isinstance(rule, dict) or not isinstance(rule.get("location"), str):
            continue
        pattern = rule["location"]
        if wildcard_match(pattern, path) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), str(rule.get("tdm-reservation", 0)) == "1")
    return bool(best and best[1])


def wildcard_match(pattern: str, path: str) -> bool:
    """Whether `path` matches a robots-style pattern (`*` any run of characters, a final `$` the end).

    Greedy piece-by-piece matching: each literal piece is found with str.find after the previous
    one, which is exact for `*`-only patterns and takes time linear in the path per piece, where the
    equivalent regular expression backtracks exponentially (`/a*a*a*a*x` against `/aaaa...`)."""
    anchored = pattern.endswith("$")
    pieces = (pattern[:-1] if anchored else pattern).split("*")
    first, rest = pieces[0], pieces[1:]
    if not path.startswith(first):
        return False
    if not rest:
        return not anchored or len(path) == len(first)
    position = len(first)
    for piece in rest[:-1]:
        found = path.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    last = rest[-1]
    if anchored:
        return len(path) - len(last) >= position and path.endswith(last)
    return path.find(last, position) >= 0


class RobotsCache:
    """Parsed robots.txt (and tdmrep.json) per origin, for as long as the shared copy is unchanged.

    Keyed by origin with the copy's expiry as its version: a node that fetched robots.txt parses it
    once; every other node parses it once when it first leases that host, not at every claim."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[str, tuple[float, Robots | None, str]] = OrderedDict()

    def get(self, origin: str, version: float | None) -> tuple[Robots | None, str] | None:
        item = self._items.get(origin)
        if item is None or version is None or item[0] != version:
            return None
        self._items.move_to_end(origin)
        return item[1], item[2]

    def put(self, origin: str, version: float, rules: Robots | None, tdmrep: str) -> None:
        self._items[origin] = (version, rules, tdmrep)
        self._items.move_to_end(origin)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)


def _robots_directives(value: str, token: str) -> set[str]:
    """Directives of one X-Robots-Tag / robots meta value that apply to us ("otherbot: noai" does not)."""
    directives: set[str] = set()
    for line in value.splitlines():  # each header sent (or meta tag) is scoped on its own
        directives |= _scoped_directives(line, token)
    return directives


def _scoped_directives(value: str, token: str) -> set[str]:
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
