"""What the crawler reads from a page itself: out-links, title, and robots/TDM meta tags.

HTML goes through selectolax (the Lexbor HTML5 parser, which accepts any tag soup the way browsers
do, and is fast); feeds and sitemaps through a bounded regular expression, so no XML parser (and no
entity-expansion bomb) is ever involved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

FEED_LINK = re.compile(
    r"<(?:link|loc|guid|id)\b[^>]*>\s*(?:<!\[CDATA\[)?\s*(https?://[^<\s\]]{1,2048})"
    r"|<link\b[^>]*\bhref\s*=\s*[\"'](https?://[^\"'<>\s]{1,2048})",
    re.IGNORECASE,
)
MAX_LINKS = 2000  # per page: a page with 100k links is a link farm, not a table of contents
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/xml", "text/xml")


@dataclass
class PageMeta:
    links: list[str] = field(default_factory=list)  # raw hrefs, resolved against `base` by the caller
    base: str = ""
    title: str = ""
    robots: list[str] = field(default_factory=list)  # content of <meta name="robots"> (and our token's)
    tdm_reservation: str = ""  # content of <meta name="tdm-reservation">


def parse_html(text: str, token: str) -> PageMeta:
    tree = LexborHTMLParser(text)
    meta = PageMeta()
    base = tree.css_first("base[href]")
    if base is not None:
        meta.base = (base.attributes.get("href") or "").strip()
    title = tree.css_first("title")
    if title is not None:
        meta.title = " ".join(title.text(strip=True).split())[:500]
    names = ("robots", token.lower())
    for node in tree.css("meta[name]"):
        name = (node.attributes.get("name") or "").strip().lower()
        content = node.attributes.get("content") or ""
        if name in names:
            meta.robots.append(content)
        elif name == "tdm-reservation":
            meta.tdm_reservation = content.strip()
    for node in tree.css("a[href], area[href], link[rel][href]"):
        rel = (node.attributes.get("rel") or "").lower().split()
        if "nofollow" in rel:
            continue
        if node.tag == "link" and not ({"alternate", "next"} & set(rel)):
            continue  # stylesheets, icons and preloads are not pages
        href = node.attributes.get("href")
        if href:
            meta.links.append(href)
            if len(meta.links) >= MAX_LINKS:
                break
    return meta


def feed_links(text: str) -> list[str]:
    """Item and entry links of an RSS/Atom feed, or <loc> entries of a sitemap."""
    links = []
    for match in FEED_LINK.finditer(text):
        links.append(match.group(1) or match.group(2))
        if len(links) >= MAX_LINKS:
            break
    return links


def parse_page(text: str, mime: str, token: str) -> PageMeta:
    """Links and meta of a page of any kept type (plain text has none)."""
    if mime in ("text/html", "application/xhtml+xml"):
        return parse_html(text, token)
    if mime in FEED_TYPES:
        return PageMeta(links=feed_links(text))
    return PageMeta()
