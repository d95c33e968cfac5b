"""URL normalization, the keys the frontier stores URLs under, link scope and crawler-trap detection.

One page is reachable under many spellings (`HTTP://Example.com:80/a/./b?utm_source=x#top`); the
frontier must see them as one URL, or the crawler fetches the same page again and again. Normalizing
also makes the 64-bit `url_hash` key meaningful: equal hashes mean the same page.
"""

from __future__ import annotations

import functools
import hashlib
import re
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
MAX_PATH_SEGMENTS = 16
MAX_SAME_SEGMENT = 3  # /a/b/a/b/a/b: a path that repeats one segment this often is a link loop

# Query keys that only track the visitor or carry a session: dropping them merges duplicate URLs.
TRACKING_KEYS = {
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "igshid", "twclid", "ttclid",
    "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "spm", "oly_enc_id",
    "oly_anon_id", "vero_id", "rb_clickid", "s_cid", "cmpid", "icid", "srsltid",
    "sessionid", "session_id", "sessid", "phpsessid", "jsessionid", "aspsessionid", "cfid", "cftoken", "sid",
}  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "aspsessionid")
# Path parameters some servers append to carry a session: /page;jsessionid=ABC123
SESSION_PATH_PARAM = re.compile(r";(jsessionid|phpsessid|sid|sessionid)=[^/?#]*", re.IGNORECASE)
# Characters that never need percent-encoding (RFC 3986 unreserved): %41 and A are the same URL.
UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
PATH_SAFE = "/:@!$&'()*+,;=-._~%"
# Calendar-like URLs (/2024/05/17/, ?year=2024&month=5) go on forever; they are capped as one family.
DATE_PATH = re.compile(r"/(19|20)\d{2}[/-](0?[1-9]|1[0-2])(\b|/)")
DATE_QUERY_KEYS = {"year", "month", "day", "date", "week", "y", "m", "d", "cal", "calendar"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def _fix_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: /a/b/../c/./d -> /a/c/d."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if segment == "..":
            if len(out) > 1:
                out.pop()
        elif segment != ".":
            out.append(segment)
        if segment in (".", "..") and index == len(segments) - 1:
            out.append("")  # /a/b/.. keeps its trailing slash: /a/
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def _is_tracking(key: str) -> bool:
    lowered = key.lower()
    return lowered in TRACKING_KEYS or lowered.startswith(TRACKING_PREFIXES)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of an http(s) URL, or None if it is not one worth crawling.

    Lower-cases scheme and host (IDNA-encoded), drops default ports, credentials, fragments, tracking
    and session parameters, resolves `..`/`.` and relative links against `base`, normalizes percent
    escapes and sorts the query."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    return _normalize_absolute(url)


@functools.lru_cache(maxsize=65536)  # pages of one site link to the same URLs over and over
def _normalize_absolute(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".").lower()
    if not host or any(ch in host for ch in " \t\r\n\\"):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    elif not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = SESSION_PATH_PARAM.sub("", parts.path)
    path = quote(PERCENT.sub(_fix_percent, path), safe=PATH_SAFE)
    path = _remove_dot_segments(path) if path else "/"
    query_pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
    query = urlencode(sorted(query_pairs), quote_via=quote, safe="-._~")
    normalized = urlunsplit((scheme, netloc, path, query, ""))
    return normalized if len(normalized) <= MAX_URL_LENGTH else None


def origin_of(url: str) -> str:
    """scheme://host[:port] of a normalized URL: the unit of leasing, politeness and robots.txt."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def hostname_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def _hash64(text: str) -> int:
    # A signed 64-bit integer, so it fits BIGINT on PostgreSQL and INTEGER on SQLite.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def url_hash(url: str) -> int:
    """The frontier's key for a normalized URL."""
    return _hash64(url)


def shard_of(origin: str) -> int:
    """A stable, non-negative hash of an origin; node i of n prefers hosts with shard % n == i."""
    return _hash64("shard:" + origin) & 0x7FFFFFFF


def default_scope(url: str) -> str:
    """The scope of a web seed: its whole site (see in_scope)."""
    return origin_of(url) + "/"


def directory_scope(url: str) -> str:
    """The scope of a documentation seed: the directory it lives in (https://d.org/3/tutorial/)."""
    parts = urlsplit(url)
    directory = parts.path[: parts.path.rfind("/") + 1] or "/"
    return f"{parts.scheme}://{parts.netloc}{directory}"


def in_scope(url: str, scope: str, *, allow_subdomains: bool) -> bool:
    """Whether a link may be followed from a page whose crawl is limited to `scope`.

    Same host (either scheme) and a path under the scope's path; with `allow_subdomains`, hosts ending
    in `.<scope host>` also count. An empty scope allows everything."""
    if not scope:
        return True
    link, limit = urlsplit(url), urlsplit(scope)
    same_host = link.netloc == limit.netloc
    if not same_host and allow_subdomains and link.hostname and limit.hostname:
        same_host = link.hostname.endswith("." + limit.hostname)
    return same_host and link.path.startswith(limit.path or "/")


def is_trap(url: str) -> bool:
    """Paths no real site needs: very deep, or the same segment repeated (relative-link loops)."""
    segments = [segment for segment in urlsplit(url).path.split("/") if segment]
    if len(segments) > MAX_PATH_SEGMENTS:
        return True
    counts: dict[str, int] = {}
    for segment in segments:
        counts[segment] = counts.get(segment, 0) + 1
        if counts[segment] >= MAX_SAME_SEGMENT:
            return True
    return False


def variant_key(url: str) -> int | None:
    """URLs that are variations of one another share a key; the frontier keeps only so many per key.

    A path with a query: every query of that path (sort orders, filters, endless permutations).
    A calendar-like path or query: every date of that pattern. Anything else: no key, no cap."""
    parts = urlsplit(url)
    query_keys = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if DATE_PATH.search(parts.path) or query_keys & DATE_QUERY_KEYS:
        return _hash64(f"date:{parts.netloc}{re.sub(r'[0-9]+', 'N', parts.path)}")
    if parts.query:
        return _hash64(f"query:{parts.netloc}{parts.path}")
    return None


def priority_for(depth: int, source: str) -> int:
    """Shallow pages first (breadth-first within a host); documentation a little ahead of the web."""
    return max(0, 100 - 10 * depth) + (5 if source == "docs" else 0)
