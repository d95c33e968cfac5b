"""Network safety: the crawler never fetches from loopback, private, link-local or multicast addresses.

A web page can link to http://192.168.1.1/ or to a name that resolves to 127.0.0.1; a crawler that
follows it would probe the network of whoever runs it (SSRF). So every address is checked after DNS
resolution, on every connection, which covers every redirect hop too: the resolver below drops such
addresses, and IP literals (which skip the resolver) are checked before each request.
CRAWLER_PRIVATE_ALLOWLIST lets chosen hosts or networks through (a local test site, an intranet).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeAddress(OSError):
    """The URL's host is (or resolves only to) an address the crawler must not reach."""


class AddressPolicy:
    """Which addresses may be fetched: public ones, plus whatever the allow-list names."""

    def __init__(self, allowlist: list[str] | tuple[str, ...] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.hostnames: set[str] = set()
        for entry in allowlist:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hostnames.add(entry.rstrip("."))

    def address_allowed(self, address: str) -> bool:
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in network for network in self.networks):
            return True
        # is_global is False for loopback, private, link-local, CGNAT, reserved and unspecified ranges.
        return ip.is_global and not ip.is_multicast

    def host_allowed(self, hostname: str) -> bool:
        """Whether a name is allow-listed as a name (its addresses are then not checked)."""
        return hostname.lower().rstrip(".") in self.hostnames

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is an IP literal outside the policy (names are checked on resolve)."""
        hostname = urlsplit(url).hostname or ""
        if self.host_allowed(hostname):
            return
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not self.address_allowed(hostname):
            raise UnsafeAddress(f"{hostname} is a loopback/private/link-local/multicast address")


class SafeResolver(AbstractResolver):
    """An aiohttp resolver that drops addresses the policy refuses (and fails if none is left)."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            return results
        safe = [result for result in results if self.policy.address_allowed(result["host"])]
        if not safe:
            addresses = ", ".join(sorted({result["host"] for result in results}))
            raise UnsafeAddress(f"{host} resolves to {addresses}: loopback/private/link-local/multicast")
        return safe

    async def close(self) -> None:
        await self.inner.close()
