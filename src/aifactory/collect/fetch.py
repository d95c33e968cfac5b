"""The HTTP fetcher: one GET with every limit a crawler facing the open web needs.

Timeouts (connect, between reads, total), a body cap counted on *decompressed* bytes (a 100 KB gzip
bomb that inflates to 10 GB stops at the cap), a content-type allow-list checked before the body is
read, redirects followed by hand (bounded, loops detected, every hop checked against robots.txt and
the network-safety policy), conditional GET, and a descriptive User-Agent. Every way a fetch can go
wrong ends in a FetchError whose `kind` is what the counters show.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import brotli

from aifactory import __version__
from aifactory.collect.decode import looks_binary
from aifactory.collect.safety import AddressPolicy, SafeResolver, UnsafeAddress, is_refusal
from aifactory.collect.urls import normalize_url, origin_of
from aifactory.settings import Settings

# Pages (HTML, XHTML, plain text) and feeds (RSS, Atom, XML) are what the crawler keeps.
PAGE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "text/plain",
        "application/rss+xml",
        "application/atom+xml",
        "application/xml",
        "text/xml",
    }
)
REDIRECTS = (301, 302, 303, 307, 308)
# Headers kept with a page: caching, content description and the opt-out signals.
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "content-language",
    "content-encoding",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "x-robots-tag",
    "tdm-reservation",
    "tdm-policy",
    "content-usage",
    "link",
)
# Headers a response may send several times that are read as one list (RFC 9110 section 5.3):
# every X-Robots-Tag and Link header counts, not only the first.
LIST_HEADERS = frozenset({"x-robots-tag", "link", "content-usage", "tdm-policy"})
MAX_HEADER_CHARS = 8192  # of one kept header, after joining (aiohttp caps each line at 8190 bytes)
CHUNK = 64 * 1024


class FetchError(Exception):
    """A fetch that produced no usable response. `retry`: a later attempt may succeed."""

    def __init__(self, kind: str, detail: str = "", *, retry: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.retry = retry


@dataclass
class Response:
    url: str  # what was asked for
    final_url: str  # after same-origin redirects
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    wire_bytes: int = 0  # bytes received (before decompression)
    mime: str = ""
    charset: str | None = None
    redirect_to: str | None = None  # a redirect to another origin, not followed: the caller queues it

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def user_agent(settings: Settings) -> str:
    contact = settings.crawler_contact_url.strip()
    about = f"+{contact}" if contact else "+self-hosted AI Factory Engine; no contact set"
    return f"{settings.crawler_user_agent}/{__version__} ({about})"


def parse_content_type(value: str) -> tuple[str, str | None]:
    mime, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'")
    return mime.strip().lower(), charset


def sniff_mime(body: bytes) -> str:
    head = body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "text/html"
    if head.startswith(b"<?xml") or head.startswith((b"<rss", b"<feed")):
        return "application/xml"
    return "text/plain"


def kept_headers(raw: Mapping[str, str]) -> dict[str, str]:
    """The headers kept with a page; a list header sent several times is joined into one value."""
    kept = {}
    for name in KEPT_HEADERS:
        if name not in raw:
            continue
        values = raw.getall(name) if name in LIST_HEADERS and hasattr(raw, "getall") else [raw[name]]
        # One line per header sent: an X-Robots-Tag "botname:" prefix scopes only its own header.
        kept[name] = "\n".join(value.strip() for value in values)[:MAX_HEADER_CHARS]
    return kept


class Decompressor:
    """gzip / deflate / brotli decoding that never produces more than `limit` bytes, whatever the input."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._brotli: brotli.Decompressor | None = None
        self._zlib: zlib._Decompress | None = None
        if encoding in ("", "identity"):
            pass
        elif encoding == "br":
            self._brotli = brotli.Decompressor()
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()  # zlib-wrapped; raw deflate is retried in feed()
        else:
            raise FetchError("encoding", f"unsupported Content-Encoding {encoding!r}")
        self._raw_deflate = encoding == "deflate"

    def feed(self, data: bytes, room: int) -> tuple[bytes, bool]:
        """Decoded bytes (at most room + 1) and whether output was left over (over the limit)."""
        if self._brotli is not None:
            try:
                out = self._brotli.process(data, output_buffer_limit=room + 1)
            except brotli.error:
                raise FetchError("encoding", "corrupt brotli body") from None
            return out, len(out) > room
        if self._zlib is None:
            return data[: room + 1], len(data) > room + 1
        try:
            out = self._zlib.decompress(data, room + 1)
        except zlib.error:
            if not self._raw_deflate:
                raise FetchError("encoding", "corrupt compressed body") from None
            self._raw_deflate = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # servers that send raw deflate
            return self.feed(data, room)
        self._raw_deflate = False
        return out, bool(self._zlib.unconsumed_tail)


class Fetcher:
    """An aiohttp session configured from the settings; `get` fetches one URL."""

    def __init__(self, settings: Settings, *, max_connections: int) -> None:
        self.settings = settings
        self.policy = AddressPolicy(settings.crawler_private_allowlist)
        self.user_agent = user_agent(settings)
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,  # per-host limits are the crawler's (politeness), not the pool's
            resolver=SafeResolver(self.policy),
            socket_factory=self.policy.socket_factory,  # the address actually dialled is checked too
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        s = self.settings
        timeout = aiohttp.ClientTimeout(
            total=s.crawler_total_timeout_sec,
            connect=s.crawler_connect_timeout_sec,
            sock_read=s.crawler_read_timeout_sec,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate, br"},
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookies: they would make pages per-visitor
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int | None = None,
        types: frozenset[str] | None = PAGE_TYPES,
        truncate: bool = False,
        follow_other_origins: bool = False,
        may_fetch: Callable[[str], bool] | None = None,
    ) -> Response:
        """GET `url`, following redirects within its origin (others are returned as `redirect_to`,
        or followed when `follow_other_origins`). Bodies over `max_bytes` raise FetchError too_large,
        or are cut at `max_bytes` when `truncate` (robots.txt). `may_fetch` vets each redirect hop."""
        limit = self.settings.crawler_max_body_bytes if max_bytes is None else max_bytes
        seen = {url}
        current = url
        for _hop in range(self.settings.crawler_max_redirects + 1):
            response = await self._get_once(current, etag, last_modified, limit, types, truncate)
            target = response.redirect_to
            if target is None:
                response.url = url
                return response
            if target in seen:
                raise FetchError("redirect_loop", f"{current} -> {target}")
            if origin_of(target) != origin_of(url) and not follow_other_origins:
                response.url = url
                return response
            if may_fetch is not None and not may_fetch(target):
                raise FetchError("robots", f"redirect to {target} is disallowed by robots.txt")
            seen.add(target)
            current = target
            etag = last_modified = None  # validators belong to the first URL only
        raise FetchError("too_many_redirects", f"more than {self.settings.crawler_max_redirects} from {url}")

    async def _get_once(
        self,
        url: str,
        etag: str | None,
        last_modified: str | None,
        limit: int,
        types: frozenset[str] | None,
        truncate: bool,
    ) -> Response:
        assert self.session is not None, "use `async with Fetcher(...)`"
        try:
            self.policy.check_url(url)
        except UnsafeAddress as exc:
            raise FetchError("unsafe_address", str(exc)) from None
        headers = {
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,text/plain;q=0.8,*/*;q=0.5"
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as resp:
                return await self._read(url, resp, limit, types, truncate)
        except FetchError:
            raise
        except (aiohttp.ClientConnectorError, UnsafeAddress) as exc:
            if is_refusal(exc):  # the resolver or the socket factory refused the address
                raise FetchError("unsafe_address", str(getattr(exc, "os_error", exc))) from None
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                raise FetchError("dns", str(exc), retry=True) from None
            if isinstance(exc, aiohttp.ClientSSLError):
                raise FetchError("tls", str(exc), retry=True) from None
            raise FetchError("connect", str(exc), retry=True) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise FetchError("tls", str(exc), retry=True) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise FetchError("timeout", str(exc) or type(exc).__name__, retry=True) from None
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
            aiohttp.ClientConnectionResetError,
            ConnectionResetError,
        ) as exc:
            raise FetchError("reset", str(exc) or type(exc).__name__, retry=True) from None
        except aiohttp.InvalidURL as exc:
            raise FetchError("bad_url", str(exc)) from None
        except aiohttp.ClientResponseError as exc:  # a response aiohttp could not parse
            raise FetchError("protocol", str(exc)) from None
        except aiohttp.ClientError as exc:
            raise FetchError("network", f"{type(exc).__name__}: {exc}", retry=True) from None
        except (UnicodeError, ValueError) as exc:  # e.g. a Location header that is not a URL
            raise FetchError("protocol", f"{type(exc).__name__}: {exc}") from None

    async def _read(
        self,
        url: str,
        resp: aiohttp.ClientResponse,
        limit: int,
        types: frozenset[str] | None,
        truncate: bool,
    ) -> Response:
        headers = kept_headers(resp.headers)
        mime, charset = parse_content_type(headers.get("content-type", ""))
        response = Response(url=url, final_url=url, status=resp.status, headers=headers, mime=mime)
        response.charset = charset
        if resp.status in REDIRECTS:
            location = headers.get("location", "")
            target = normalize_url(location, base=url) if location else None
            if target is None:
                raise FetchError("bad_redirect", f"{resp.status} with Location {location[:200]!r}")
            response.redirect_to = target
            return response
        if resp.status != 200:
            return response  # the status says it all; an error page's body is not wanted
        if types is not None and mime and mime not in types:
            raise FetchError("content_type", mime[:60])
        length = resp.headers.get("content-length", "")
        encoding = resp.headers.get("content-encoding", "")
        if not truncate and length.isdigit() and int(length) > limit and not encoding:
            raise FetchError("too_large", f"Content-Length {length} > {limit}")
        decompressor = Decompressor(encoding)
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK):
            response.wire_bytes += len(chunk)
            if response.wire_bytes > limit * 4 and not truncate:
                raise FetchError("too_large", f"more than {limit * 4} bytes on the wire")
            data, over = decompressor.feed(chunk, limit - size)
            parts.append(data)
            size += len(data)
            if over or size > limit:
                if truncate:
                    break
                raise FetchError("too_large", f"body over {limit} bytes (decompressed)")
        body = b"".join(parts)[:limit]
        if types is not None:
            if not mime:
                response.mime = sniff_mime(body)
            if looks_binary(body):
                raise FetchError("binary", f"binary body served as {response.mime}")
        response.body = body
        return response
