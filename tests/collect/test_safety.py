"""Network safety: a page cannot point the crawler at the user's machine or LAN."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.web import HTTPFound

from aifactory.collect.safety import AddressPolicy, SafeResolver, UnsafeAddress
from aifactory.db import Database
from tests.collect.harness import crawl, crawl_settings, frontier_rows
from tests.collect.sites import SiteServer, page, wide_site


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "ff02::1"],
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


def test_ip_literals_are_checked_before_any_request() -> None:
    policy = AddressPolicy()
    with pytest.raises(UnsafeAddress):
        policy.check_url("http://127.0.0.1:8080/")
    with pytest.raises(UnsafeAddress):
        policy.check_url("http://[::1]/")
    policy.check_url("http://example.com/")  # names are checked when resolved


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
