"""URL normalization, the keys the frontier stores URLs under, link scope and crawler-trap detection.

One page is reachable under many spellings (`HTTP://Example.com:80/a/./b?utm_source=x#top`); the
frontier must see them as one URL, or the crawler fetches the same page again and again. Normalizing
also makes the 64-bit `url_hash` key meaningful: equal hashes mean the same page.

What normalization does, and what it never does:
- host: lower-cased, trailing dot dropped, internationalized names in IDNA 2008 (UTS #46, so `faß.de`
  stays `xn--fa-hia.de` and is not folded to `fass.de`); every numeric IPv4 form a browser accepts
  (`2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1`) becomes the dotted quad it means, and IPv6
  literals their compressed form, so the network-safety check sees the address that will be dialled;
  host names longer than DNS allows are refused;
- path and query: percent escapes of unreserved characters decoded, the others upper-cased; bytes it
  does not understand (`?q=%82%A0`, a Shift_JIS query) are kept exactly as they are; a key without a
  value stays without one (`?a` is not `?a=`); parameters are sorted by key (values of one key keep
  their order); tracking and session parameters (TRACKING_KEYS, TRACKING_PREFIXES) are dropped.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import idna
from publicsuffixlist import PublicSuffixList

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253  # DNS: a name of at most 253 characters, in labels of at most 63
MAX_LABEL_LENGTH = 63
MAX_PATH_SEGMENTS = 16
MAX_SAME_SEGMENT = 3  # /a/b/a/b/a/b: a path that repeats one segment this often is a link loop

# Query keys that only track the visitor or carry a session: dropping them merges duplicate URLs.
# Click ids of ad networks and mail tools, analytics cookies passed in the URL, session ids of common
# server frameworks. Deliberately absent: keys that often select content (`id`, `sid`, `ref`, `page`).
TRACKING_KEYS = {
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "igshid", "twclid", "ttclid",
    "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "spm", "oly_enc_id",
    "oly_anon_id", "vero_id", "rb_clickid", "s_cid", "cmpid", "icid", "srsltid",
    "sessionid", "session_id", "sessid", "phpsessid", "jsessionid", "aspsessionid", "cfid", "cftoken",
}  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "aspsessionid")
# Path parameters some servers append to carry a session: /page;jsessionid=ABC123
SESSION_PATH_PARAM = re.compile(r";(jsessionid|phpsessid|sid|sessionid)=[^/?#]*", re.IGNORECASE)
# Characters that never need percent-encoding (RFC 3986 unreserved): %41 and A are the same URL.
UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
PATH_SAFE = "/:@!$&'()*+,;=-._~%"
QUERY_SAFE = "/?:@!$'()*+,;=-._~%"  # `&` separates parameters: a literal one stays encoded
FORBIDDEN_HOST_CHARS = frozenset(" \t\r\n\\/?#@%[]<>^|:*")
HOST_CHARS = re.compile(r"[a-z0-9_-]{1,63}")  # one label of an ASCII host name (underscores do occur)
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
    lowered = unquote(key).lower()
    return lowered in TRACKING_KEYS or lowered.startswith(TRACKING_PREFIXES)


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, octal (leading 0) or hexadecimal (0x)."""
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
        if not digits:
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or len(digits) > 32:
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def _ends_in_number(host: str) -> bool:
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2].lower() == "0x" and all(ch in "0123456789abcdefABCDEF" for ch in last[2:])


def parse_ipv4(host: str) -> str | None:
    """The dotted quad of a host written as any IPv4 form browsers accept (the WHATWG URL host
    parser): `2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1` are all 127.0.0.1. None if invalid."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    head, last = numbers[:-1], numbers[-1]
    if any(number > 255 for number in head) or last >= 256 ** (5 - len(numbers)):  # type: ignore[operator]
        return None
    value = last
    for index, number in enumerate(head):
        value += number * 256 ** (3 - index)  # type: ignore[operator]
    return str(ipaddress.IPv4Address(value))


@functools.lru_cache(maxsize=16384)
def canonical_host(host: str) -> str | None:
    """The one spelling of a URL's host (see the module docs); None if it is not a valid host."""
    host = unquote(host).strip().lower()  # percent-encoded host names mean their decoded form
    if not host:
        return None
    if host.startswith("[") or ":" in host:
        return _ipv6(host)
    if any(ch in host for ch in FORBIDDEN_HOST_CHARS):
        return None
    if _ends_in_number(host):
        return parse_ipv4(host)
    host = host.removesuffix(".")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    if len(host) > MAX_HOST_LENGTH:
        return None
    if not all(HOST_CHARS.fullmatch(label) for label in host.split(".")):
        return None
    return host


def _ipv6(host: str) -> str | None:
    if not (host.startswith("[") and host.endswith("]")):
        return None
    try:
        address = ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        return None
    if address.scope_id:
        return None  # zone ids (fe80::1%eth0) have no place in a URL to crawl
    return f"[{address.compressed}]"


def _normalize_query(query: str) -> str:
    """Parameters without tracking keys, sorted by key, each kept byte for byte (escapes tidied)."""
    parts = []
    for part in query.split("&"):
        if not part:
            continue
        key = part.split("=", 1)[0]
        if _is_tracking(key):
            continue
        parts.append(quote(PERCENT.sub(_fix_percent, part), safe=QUERY_SAFE))
    parts.sort(key=lambda part: part.split("=", 1)[0])  # stable: one key's values keep their order
    return "&".join(parts)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of an http(s) URL, or None if it is not one worth crawling.

    Lower-cases scheme and host (see canonical_host), drops default ports, credentials, fragments,
    tracking and session parameters, resolves `..`/`.` and relative links against `base`, normalizes
    percent escapes and sorts the query."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    if base is not None and not url.startswith(("http://", "https://")):
        if url[0] == "/" and url[:2] != "//" and base.startswith(("http://", "https://")):
            url = origin_of(base) + url  # root-relative, the commonest link: no general join needed
        else:
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
    if scheme not in DEFAULT_PORTS:
        return None
    netloc = parts.netloc.rpartition("@")[2]  # credentials are dropped
    raw_host = netloc
    if raw_host.startswith("["):
        raw_host = raw_host[: raw_host.find("]") + 1]
    elif ":" in raw_host:
        raw_host = raw_host.rsplit(":", 1)[0]
    host = canonical_host(raw_host) if raw_host else None
    if host is None:
        return None
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = SESSION_PATH_PARAM.sub("", parts.path)
    path = quote(PERCENT.sub(_fix_percent, path), safe=PATH_SAFE)
    path = _remove_dot_segments(path) if path else "/"
    normalized = urlunsplit((scheme, netloc, path, _normalize_query(parts.query), ""))
    return normalized if len(normalized) <= MAX_URL_LENGTH else None


def origin_of(url: str) -> str:
    """scheme://host[:port] of a normalized URL: the unit robots.txt applies to."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    return f"{scheme}://{rest[:end]}"


def hostname_of(url: str) -> str:
    return urlsplit(url).hostname or ""


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped inside the package: nothing is downloaded


@functools.lru_cache(maxsize=65536)
def site_of(origin: str, per: str = "domain") -> str:
    """The politeness unit of an origin: the one pace and the one lease its requests share.

    `per="host"`: the host name (http and https, and every port, of one host are one site).
    `per="domain"`: the registrable domain from the Public Suffix List (www.example.co.uk and
    static.example.co.uk are one site; alice.github.io and bob.github.io are two). IP addresses,
    and names that are themselves a public suffix or have none (localhost), are their own site."""
    host = urlsplit(origin).hostname or origin
    if per == "host" or ":" in host or _ends_in_number(host):
        return host
    return _public_suffixes().privatesuffix(host) or host


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


@functools.lru_cache(maxsize=65536)  # a site's pages link to the same pages over and over
def in_scope(url: str, scope: str, *, allow_subdomains: bool) -> bool:
    """Whether a link may be followed from a page whose crawl is limited to `scope`.

    Same host (either scheme) and a path under the scope's path; with `allow_subdomains`, hosts ending
    in `.<scope host>` also count. An empty scope allows everything."""
    if not scope:
        return True
    link, limit = urlsplit(url), _split(scope)
    same_host = link.netloc == limit.netloc
    if not same_host and allow_subdomains and link.hostname and limit.hostname:
        same_host = link.hostname.endswith("." + limit.hostname)
    return same_host and link.path.startswith(limit.path or "/")


@functools.lru_cache(maxsize=4096)
def _split(url: str) -> tuple:  # scopes are few and are checked against every link
    return urlsplit(url)


@functools.lru_cache(maxsize=65536)
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
    query_keys = {unquote(part.split("=", 1)[0]).lower() for part in parts.query.split("&") if part}
    if DATE_PATH.search(parts.path) or query_keys & DATE_QUERY_KEYS:
        return _hash64(f"date:{parts.netloc}{re.sub(r'[0-9]+', 'N', parts.path)}")
    if parts.query:
        return _hash64(f"query:{parts.netloc}{parts.path}")
    return None


def priority_for(depth: int, source: str) -> int:
    """Shallow pages first (breadth-first within a host); documentation a little ahead of the web."""
    return max(0, 100 - 10 * depth) + (5 if source == "docs" else 0)
