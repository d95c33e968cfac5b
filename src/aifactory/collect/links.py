"""What the crawler reads from a page itself: out-links, title, and robots/TDM meta tags.

HTML goes through selectolax (the Lexbor HTML5 parser, which accepts any tag soup the way browsers
do, and is fast); feeds and sitemaps through a one-pass scanner of their tags, so no XML parser (and no
entity-expansion bomb) is ever involved, and no pattern can backtrack over what a hostile feed holds
(a `<link>` followed by megabytes of spaces, thousands of unclosed `<link` tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

# Elements whose text is an item's URL (RSS <link>/<guid>, sitemap <loc>, Atom <id>), and the URL
# itself, matched at one known position with a bounded length: never a search over the whole text.
TEXT_LINK_TAGS = frozenset({"link", "loc", "guid", "id"})
TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9:_-]{0,31}")
URL_AT = re.compile(r"https?://[^<\s\]]{1,2048}", re.IGNORECASE)
HREF = re.compile(r"""\bhref[ \t\r\n]{0,16}=[ \t\r\n]{0,16}["'](https?://[^"'<>\s]{1,2048})""", re.IGNORECASE)
MAX_TAG_CHARS = 4096  # attributes looked at per tag
CDATA = "<![CDATA["
MAX_LINKS = 2000  # per page: a page with 100k links is a link farm, not a table of contents
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/xml", "text/xml")


@dataclass
class PageMeta:
    links: list[str] = field(default_factory=list)  # raw hrefs, resolved against `base` by the caller
    base: str = ""
    title: str = ""
    robots: list[str] = field(default_factory=list)  # content of <meta name="robots"> (and our token's)
    tdm_reservation: str = ""  # content of <meta name="tdm-reservation">


# One pass over the document for everything the crawler reads from it, in document order.
PAGE_SELECTOR = "base[href], title, meta[name], a[href], area[href], link[rel][href]"


def parse_html(text: str, token: str) -> PageMeta:
    tree = LexborHTMLParser(text)
    meta = PageMeta()
    names = ("robots", token.lower())
    have_base = have_title = False
    for node in tree.css(PAGE_SELECTOR):
        tag = node.tag
        attrs = node.attrs
        if tag == "a" or tag == "area" or tag == "link":
            if len(meta.links) >= MAX_LINKS:
                continue
            rel = (attrs.get("rel") or "").lower().split()
            if "nofollow" in rel:
                continue
            if tag == "link" and not ({"alternate", "next"} & set(rel)):
                continue  # stylesheets, icons and preloads are not pages
            href = attrs.get("href")
            if href:
                meta.links.append(href)
        elif tag == "meta":
            name = (attrs.get("name") or "").strip().lower()
            content = attrs.get("content") or ""
            if name in names:
                meta.robots.append(content)
            elif name == "tdm-reservation":
                meta.tdm_reservation = content.strip()
        elif tag == "title" and not have_title:
            have_title = True
            meta.title = " ".join(node.text(strip=True).split())[:500]
        elif tag == "base" and not have_base:
            have_base = True
            meta.base = (attrs.get("href") or "").strip()
    return meta


def _skip_space(text: str, position: int) -> int:
    end = len(text)
    while position < end and text[position] in " \t\r\n":
        position += 1
    return position


def feed_links(text: str) -> list[str]:
    """Item and entry links of an RSS/Atom feed, or <loc> entries of a sitemap.

    One left-to-right pass over the tags: each character is looked at a bounded number of times, so
    the time is linear in the feed whatever it contains."""
    links: list[str] = []
    position, end, close = 0, len(text), -1
    while len(links) < MAX_LINKS:
        start = text.find("<", position)
        if start < 0:
            break
        if close < start:  # the next `>` is searched once per stretch of text, not once per `<`
            close = text.find(">", start)
            if close < 0:
                break  # an unclosed tag: nothing after it can be a complete element
        name = TAG_NAME.match(text, start + 1, min(close, start + 33))
        if name is None:
            position = start + 1
            continue
        position = close + 1
        tag = name.group(0).lower()
        if tag == "link":  # Atom: <link rel="alternate" href="..."/>
            href = HREF.search(text, name.end(), min(close, start + MAX_TAG_CHARS))
            if href is not None:
                links.append(href.group(1))
                continue
        if tag not in TEXT_LINK_TAGS or text[close - 1] == "/":
            continue
        at = _skip_space(text, position)
        if text.startswith(CDATA, at):
            at = _skip_space(text, at + len(CDATA))
        url = URL_AT.match(text, at, min(end, at + 2100))
        if url is not None:
            links.append(url.group(0))
            position = url.end()
        else:
            position = max(position, at)
    return links


def parse_page(text: str, mime: str, token: str) -> PageMeta:
    """Links and meta of a page of any kept type (plain text has none)."""
    if mime in ("text/html", "application/xhtml+xml"):
        return parse_html(text, token)
    if mime in FEED_TYPES:
        return PageMeta(links=feed_links(text))
    return PageMeta()
