"""Network safety: a page cannot point the crawler at the user's machine or LAN."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.web import HTTPFound

from aifactory.collect.fetch import Fetcher, FetchError
from aifactory.collect.safety import AddressPolicy, SafeResolver, UnsafeAddress
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows
from tests.collect.sites import SiteServer, page, wide_site


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "ff02::1",
     # IPv6 forms that carry a private IPv4 address: NAT64, IPv4-compatible, 6to4, Teredo.
     "64:ff9b::7f00:1", "64:ff9b::10.0.0.1", "64:ff9b:1::a9fe:a9fe", "::127.0.0.1", "::10.0.0.1",
     "2002:c0a8:101::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().address_allowed(address)


def test_public_addresses_and_the_allowlist_pass() -> None:
    assert AddressPolicy().address_allowed("93.184.215.14")
    assert AddressPolicy().address_allowed("2606:4700::1111")
    policy = AddressPolicy(["127.0.0.1", "10.0.0.0/8", "intranet.local"])
    assert policy.address_allowed("127.0.0.1")
    assert policy.address_allowed("10.9.9.9")
    assert not policy.address_allowed("127.0.0.2")
    assert not policy.address_allowed("192.168.0.1")
    assert policy.host_allowed("Intranet.Local")


def test_embedded_public_ipv4_passes() -> None:
    assert AddressPolicy().address_allowed("64:ff9b::5db8:d70e")  # NAT64 of 93.184.215.14


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://[::1]/", "http://2130706433/", "http://127.1/", "http://0x7f.1/",
     "http://0177.0.0.1/", "http://%31%32%37.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://[64:ff9b::a00:1]/",
     "http://1.2.3.4.5/"],
)  # fmt: skip
def test_ip_literals_in_every_spelling_are_checked_before_any_request(url: str) -> None:
    with pytest.raises(UnsafeAddress):
        AddressPolicy().check_url(url)


def test_names_are_checked_when_resolved() -> None:
    AddressPolicy().check_url("http://example.com/")


def test_the_address_dialled_is_checked_however_the_url_was_read() -> None:
    """The socket factory refuses the connection itself, whatever the HTTP library made of the host."""
    policy = AddressPolicy()
    for address in (("127.0.0.1", 80), ("::ffff:127.0.0.1", 80, 0, 0), ("64:ff9b::a00:1", 80, 0, 0)):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with pytest.raises(UnsafeAddress):
            policy.socket_factory((family, socket.SOCK_STREAM, 6, "", address))
    AddressPolicy(["127.0.0.0/8"]).socket_factory(
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
    ).close()


def test_a_refused_connection_is_refused_even_when_the_earlier_checks_are_bypassed(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    async def resolve_anything(self: SafeResolver, host: str, port: int = 0, family: Any = 0) -> Any:
        return await self.inner.resolve(host, port, family)

    monkeypatch.setattr(AddressPolicy, "check_url", lambda self, url: None)  # IP literals pass
    monkeypatch.setattr(SafeResolver, "resolve", resolve_anything)  # so do names of private addresses

    async def fetch(url: str) -> str:
        async with Fetcher(
            crawl_settings(make_settings, crawler_private_allowlist=[]), max_connections=2
        ) as fetcher:
            try:
                await fetcher.get(url)
            except FetchError as exc:
                return exc.kind
        return "fetched"

    with SiteServer(wide_site(1)) as site:
        assert asyncio.run(fetch(site.url("/"))) == "unsafe_address"
        assert asyncio.run(fetch(f"http://localhost:{site.port}/")) == "unsafe_address"
        assert site.hits == []


def test_a_numeric_seed_is_counted_as_refused_not_as_unreachable(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings, crawler_private_allowlist=[])
    with SiteServer(wide_site(3)) as site:
        counts = crawl(db, settings, [f"http://2130706433:{site.port}/"])
        assert site.hits == []
    assert counts["errors_unsafe_address"] == 1 and counts["errors_robots_unreachable"] == 0


class FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


def test_the_resolver_drops_private_addresses_and_fails_when_none_is_left() -> None:
    async def resolve(*addresses: str) -> list[str]:
        resolver = SafeResolver(AddressPolicy(), inner=FixedResolver(*addresses))
        return [result["host"] for result in await resolver.resolve("evil.example", 80)]

    assert asyncio.run(resolve("93.184.215.14", "127.0.0.1")) == ["93.184.215.14"]
    with pytest.raises(UnsafeAddress):
        asyncio.run(resolve("127.0.0.1", "10.0.0.1"))


def test_without_the_allowlist_a_loopback_site_gets_no_request(db: Database, make_settings: Any) -> None:
    settings = crawl_settings(make_settings, crawler_private_allowlist=[])
    with SiteServer(wide_site(3)) as site, SiteServer(wide_site(3), host="127.0.0.1") as named:
        counts = crawl(db, settings, [site.url("/"), f"http://localhost:{named.port}/"])
        assert site.hits == [] and named.hits == []  # neither the IP literal nor the name got through
    assert counts["errors_unsafe_address"] == 2
    assert {row["state"] for row in frontier_rows(db).values()} == {"skipped"}


def test_every_redirect_hop_is_checked(db: Database, make_settings: Any) -> None:
    # The allowlist admits 127.0.0.2 only; a page there redirects to a server on 127.0.0.1.
    settings = crawl_settings(make_settings, crawler_private_allowlist=["127.0.0.2/32"])
    with SiteServer({"/secret": page("internal")}, host="127.0.0.1") as internal:

        async def redirect(_request: Any) -> Any:
            raise HTTPFound(internal.url("/secret"))

        with SiteServer({"/go": redirect}, host="127.0.0.2") as public:
            counts = crawl(db, settings, [public.url("/go")])  # a seed that moved: followed to its new host
            assert public.paths() == ["/robots.txt", "/.well-known/tdmrep.json", "/go"]
        assert internal.hits == []
    assert counts["errors_unsafe_address"] == 1
    assert frontier_rows(db)[internal.url("/secret")]["error"] == "unsafe_address"
