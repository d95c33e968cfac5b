"""A hostile web site, for tests: every way a server can try to hang, flood, trick or crash a crawler.

Routes (all on one SiteServer; `hostile_routes(internal)` takes the URL of a server the crawler must
never reach, on an address outside its allow-list):
    /slowloris          headers, then one byte of body every 0.1 s, for as long as the client listens
    /slow-headers       the status line, then one header line every 0.1 s, never the end of the headers
    /endless-chunked    a chunked body that never ends (64 KB chunks, up to 200 MB)
    /gzip-bomb          200 MB of zeros in about 200 KB of gzip
    /brotli-bomb        200 MB of zeros in a few hundred bytes of brotli
    /loop-a, /loop-b    a redirect loop
    /to-private         a redirect chain ending at the internal server, spelled as a number
    /to-spelling/N      a redirect to the internal server in the N-th numeric spelling
    /numeric-links      a page linking to the internal server in every numeric IPv4/IPv6 spelling
    /huge-header        a 64 KB header line
    /bad-charset        charset=x-no-such-charset; /codec-charset: a label naming a non-text codec
    /feed               an RSS feed of pathological tags (a <link> and 500 KB of spaces, unclosed tags)
    /storm              429 with Retry-After: 1, every time
    /changing           new content and a new ETag on every fetch
    /nested             40,000 nested <div>s; /link-farm: 20,000 links
    /robots.txt         20,000 blank lines, Content-Usage lines, wildcard rules built to backtrack
    /.well-known/tdmrep.json   a wildcard location built to backtrack
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import zlib

import brotli
from aiohttp import web

from tests.collect.sites import Handler, links, page

BOMB_BYTES = 200 * 1024 * 1024
BACKTRACK_PATH = "/" + "a" * 300  # against /a*a*a*a*a*a*x a backtracking matcher takes ages


@functools.cache
def gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(BOMB_BYTES >> 20)) + compressor.flush()


@functools.cache
def brotli_bomb() -> bytes:
    compressor = brotli.Compressor(quality=5)
    zeros = bytes(1 << 20)
    return b"".join(compressor.process(zeros) for _ in range(BOMB_BYTES >> 20)) + compressor.finish()


def encoded(body: bytes, encoding: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": "text/html", "Content-Encoding": encoding})

    return handler


def redirect(to: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(to)

    return handler


async def slowloris(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    await response.prepare(request)
    for _ in range(600):  # a minute at most, should a client listen that long
        if request.transport is None or request.transport.is_closing():
            break
        await response.write(b"<")
        await asyncio.sleep(0.1)
    return response


async def slow_headers(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    assert transport is not None
    transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n")
    for i in range(600):
        if transport.is_closing():
            break
        transport.write(f"X-Slow-{i}: yes\r\n".encode())
        await asyncio.sleep(0.1)
    transport.close()
    return web.Response()


async def endless_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"<p>" + b"x" * (64 * 1024 - 8) + b"</p>\n"
    for _ in range(BOMB_BYTES // len(chunk)):
        if request.transport is None or request.transport.is_closing():
            break
        await response.write(chunk)
    return response


async def huge_header(_request: web.Request) -> web.StreamResponse:
    return web.Response(text="<p>x</p>", content_type="text/html", headers={"X-Huge": "h" * 65536})


def raw(body: bytes, content_type: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


async def storm(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})


def changing() -> Handler:
    counter = itertools.count()

    async def handler(_request: web.Request) -> web.StreamResponse:
        n = next(counter)
        return web.Response(
            text=f"<title>version {n}</title><p>{'fresh words ' * 20}{n}</p>",
            content_type="text/html",
            headers={"ETag": f'"v{n}"'},
        )

    return handler


def numeric_spellings(port: int) -> list[str]:
    """127.0.0.1 as browsers (and some HTTP libraries) accept it."""
    hosts = [
        "2130706433", "127.1", "127.0.1", "0x7f.1", "0x7f000001", "0177.0.0.1", "0177.1", "%31%32%37.0.0.1",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::]",
    ]  # fmt: skip
    return [f"http://{host}:{port}/secret" for host in hosts]


PATHOLOGICAL_ROBOTS = (
    "User-agent: *\n"
    + "\n" * 20_000
    + "Content-Usage: /blog/ train-ai=n\n"
    + ("Disallow: /a*a*a*a*a*a*a*a*a*x\n" * 50)
    + "Disallow: /private/\n"
    + "# " + " " * 50_000 + "\n"
)  # fmt: skip
PATHOLOGICAL_TDMREP = json.dumps([{"location": "/a*a*a*a*a*a*a*a*a*x", "tdm-reservation": 1}] * 20)
PATHOLOGICAL_FEED = (
    "<rss><channel><item><link>" + " " * 500_000 + "</link></item>"
    + "<link " * 40_000
    + "</channel></rss>"
)  # fmt: skip


def hostile_routes(internal: str) -> dict[str, Handler]:
    """The hostile site; `internal` is the origin of a server that must never be reached."""
    port = int(internal.rsplit(":", 1)[1])
    spellings = numeric_spellings(port)
    routes: dict[str, Handler] = {
        "/slowloris": slowloris,
        "/slow-headers": slow_headers,
        "/endless-chunked": endless_chunked,
        "/gzip-bomb": encoded(gzip_bomb(), "gzip"),
        "/brotli-bomb": encoded(brotli_bomb(), "br"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/to-private": redirect("/to-private/1"),
        "/to-private/1": redirect("/to-private/2"),
        "/to-private/2": redirect(spellings[0]),
        "/numeric-links": page(links(*spellings)),
        "/huge-header": huge_header,
        "/bad-charset": raw(
            "<title>caf\u00e9</title><p>text</p>".encode(), "text/html; charset=x-no-such-charset"
        ),
        "/codec-charset": raw(b"<title>zip</title><p>text</p>", "text/html; charset=zlib_codec"),
        "/feed": raw(PATHOLOGICAL_FEED.encode(), "application/rss+xml"),
        "/storm": storm,
        "/changing": changing(),
        "/nested": page("<div>" * 40_000 + "deep" + "</div>" * 40_000),
        "/link-farm": page(links(*(f"/farm/{i}" for i in range(20_000)))),
        BACKTRACK_PATH: page("a page whose path makes wildcard rules backtrack"),
        "/robots.txt": raw(PATHOLOGICAL_ROBOTS.encode(), "text/plain"),
        "/.well-known/tdmrep.json": raw(PATHOLOGICAL_TDMREP.encode(), "application/json"),
        "/ok": page("<p>an ordinary page among them</p>"),
    }
    hops = {f"/to-spelling/{i}": redirect(target) for i, target in enumerate(spellings)}
    routes.update(hops)
    top = [path for path in routes if path.count("/") == 1 and path != "/robots.txt"]
    routes["/"] = page(links(*top, *hops))
    return routes
