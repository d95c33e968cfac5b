"""URL normalization, scope and trap rules: one page, one frontier key; links stay where they belong."""

from __future__ import annotations

import pytest

from aifactory.collect.urls import (
    directory_scope,
    in_scope,
    is_trap,
    normalize_url,
    origin_of,
    shard_of,
    site_of,
    url_hash,
    variant_key,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM/a", "http://example.com/a"),
        ("https://example.com:443/", "https://example.com/"),
        ("http://example.com:8080", "http://example.com:8080/"),
        ("http://example.com/a#section", "http://example.com/a"),
        ("http://example.com/?b=2&a=1", "http://example.com/?a=1&b=2"),
        ("http://example.com/?utm_source=x&id=3&fbclid=y&gclid=z", "http://example.com/?id=3"),
        ("http://example.com/p;jsessionid=ABC123?x=1", "http://example.com/p?x=1"),
        ("http://example.com/?PHPSESSID=1&q=a", "http://example.com/?q=a"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/a/b/..", "http://example.com/a/"),
        ("http://example.com/%7Euser/%2f", "http://example.com/~user/%2F"),
        ("http://example.com/caf\u00e9 menu", "http://example.com/caf%C3%A9%20menu"),
        ("http://user:pass@example.com/", "http://example.com/"),
        ("http://B\u00fccher.example/", "http://xn--bcher-kva.example/"),
        ("http://example.com./x", "http://example.com/x"),
        # Bytes it does not understand are kept: a Shift_JIS query is not turned into U+FFFD.
        ("http://example.com/search?q=%82%A0&x=%e3%81%82", "http://example.com/search?q=%82%A0&x=%E3%81%82"),
        ("http://example.com/?a", "http://example.com/?a"),  # a key without a value stays so
        ("http://example.com/?b&a=&c=1", "http://example.com/?a=&b&c=1"),
        ("http://example.com/?q=a%26b&x=1+2", "http://example.com/?q=a%26b&x=1+2"),
        ("http://example.com/?b=2&a=9&b=1", "http://example.com/?a=9&b=2&b=1"),  # one key keeps its order
        ("http://news.example/story?sid=123", "http://news.example/story?sid=123"),  # sid selects content
        # IDNA 2008 (UTS #46): the German sharp s is a letter of its own, not "ss".
        ("http://fa\u00df.de/", "http://xn--fa-hia.de/"),
        ("http://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com/", "http://example.com/"),
        # Numeric hosts, as browsers read them, become the address they mean.
        ("http://2130706433:8080/x", "http://127.0.0.1:8080/x"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://0x7f.0.0.1/", "http://127.0.0.1/"),
        ("http://0177.0.0.01/", "http://127.0.0.1/"),
        ("http://%31%32%37.0.0.1/", "http://127.0.0.1/"),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "http://[::ffff:7f00:1]/"),
    ],
)
def test_normalization_gives_one_spelling_per_page(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


def test_relative_links_are_resolved_against_the_page() -> None:
    base = "http://example.com/docs/guide/intro.html"
    assert normalize_url("../api/", base=base) == "http://example.com/docs/api/"
    assert normalize_url("next.html#top", base=base) == "http://example.com/docs/guide/next.html"
    assert normalize_url("//other.org/x", base=base) == "http://other.org/x"
    assert normalize_url("?page=2", base=base) == "http://example.com/docs/guide/intro.html?page=2"


@pytest.mark.parametrize(
    "raw",
    ["mailto:a@example.com", "javascript:void(0)", "ftp://example.com/f", "data:text/html,x", "http://", "",
     "http://example.com:99999/", "http://" + "a" * 3000 + ".com/", "http://" + "a" * 400 + ".com/",
     "http://" + ".".join(["a" * 60] * 5) + ".com/", "http://1.2.3.4.5/", "http://256.1.1.1/",
     "http://example.123/", "http://[fe80::1%25eth0]/", "http://exa mple.com/", "http://\u2603.net/"],
)  # fmt: skip
def test_what_is_not_an_http_url_is_refused(raw: str) -> None:
    assert normalize_url(raw) is None


def test_the_politeness_unit_is_the_host_or_its_registrable_domain() -> None:
    assert (
        site_of("https://www.example.co.uk") == site_of("http://static.example.co.uk:8080") == "example.co.uk"
    )
    assert site_of("https://alice.github.io") != site_of("https://bob.github.io")  # a public suffix
    assert site_of("http://127.0.0.2:8080") == "127.0.0.2" and site_of("http://[::1]:80") == "::1"
    assert site_of("http://localhost:8000") == "localhost"
    assert site_of("https://www.example.co.uk", "host") == "www.example.co.uk"


def test_keys_are_stable_and_distinct() -> None:
    a, b = normalize_url("http://example.com/a"), normalize_url("http://EXAMPLE.com/a#x")
    assert a == b and a is not None
    assert url_hash(a) == url_hash(b)
    assert url_hash(a) != url_hash("http://example.com/b")
    assert -(2**63) <= url_hash(a) < 2**63
    assert 0 <= shard_of(origin_of(a)) < 2**31
    assert origin_of("http://example.com:8080/x?y") == "http://example.com:8080"


def test_scope_keeps_links_on_the_site_or_the_documentation_directory() -> None:
    site = "http://example.com/"
    assert in_scope("http://example.com/any/page", site, allow_subdomains=False)
    assert in_scope("https://example.com/any/page", site, allow_subdomains=False)  # same host, other scheme
    assert not in_scope("http://other.com/", site, allow_subdomains=False)
    assert not in_scope("http://blog.example.com/", site, allow_subdomains=False)
    assert in_scope("http://blog.example.com/", site, allow_subdomains=True)
    assert not in_scope("http://badexample.com/", site, allow_subdomains=True)
    assert not in_scope(
        "http://example.com:8080/", site, allow_subdomains=False
    )  # another port, another site
    docs = directory_scope("https://docs.python.org/3/tutorial/index.html")
    assert docs == "https://docs.python.org/3/tutorial/"
    assert in_scope("https://docs.python.org/3/tutorial/classes.html", docs, allow_subdomains=False)
    assert not in_scope("https://docs.python.org/3/library/os.html", docs, allow_subdomains=False)


def test_obvious_traps_are_recognized() -> None:
    assert is_trap("http://example.com/a/b/a/b/a/b/")  # a relative-link loop
    assert is_trap("http://example.com/" + "/".join(f"d{i}" for i in range(20)))
    assert not is_trap("http://example.com/blog/2024/05/post")


def test_variants_of_one_page_share_a_key() -> None:
    # Endless query permutations of one path.
    assert variant_key("http://example.com/list?sort=a") == variant_key("http://example.com/list?sort=b&p=2")
    assert variant_key("http://example.com/list?sort=a") != variant_key("http://example.com/other?sort=a")
    # Calendars: every date of one pattern.
    assert variant_key("http://example.com/cal/2024/05/") == variant_key("http://example.com/cal/2031/12/")
    assert variant_key("http://example.com/events?year=2024&month=5") is not None
    # Ordinary pages are not capped.
    assert variant_key("http://example.com/post/123") is None
