"""Network safety: the crawler never fetches from loopback, private, link-local or multicast addresses.

A web page can link to http://192.168.1.1/ or to a name that resolves to 127.0.0.1; a crawler that
follows it would probe the network of whoever runs it (SSRF). Three checks, each independent of how
the HTTP library parses hosts:
- URLs are normalized first (collect.urls), so every numeric IPv4 spelling (`2130706433`, `127.1`,
  `0x7f.1`) is the dotted quad it means, and IP literals are refused before any request;
- the resolver drops unsafe addresses a name resolves to (and fails if none is left);
- the socket factory checks the address each connection is actually opened to, on every connection
  and so on every redirect hop: whatever path an address took, a refused one is never dialled.
IPv6 addresses that embed an IPv4 address (IPv4-mapped and -compatible, NAT64 64:ff9b::/96 and
64:ff9b:1::/48, 6to4, Teredo) are judged by that IPv4 address too. CRAWLER_PRIVATE_ALLOWLIST lets
chosen hosts or networks through (a local test site, an intranet).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from aifactory.collect.urls import canonical_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
REFUSED = "refused by the network-safety policy"  # in every UnsafeAddress message: how it is recognized
ALLOWLIST_HINT = "set CRAWLER_PRIVATE_ALLOWLIST to crawl hosts on your own network"


class UnsafeAddress(OSError):
    """The URL's host is (or resolves only to) an address the crawler must not reach."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for every standard way of carrying one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address (the server's is public by construction)
    if any(ip in network for network in NAT64) or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class AddressPolicy:
    """Which addresses may be fetched: public ones, plus whatever the allow-list names."""

    def __init__(self, allowlist: list[str] | tuple[str, ...] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.hostnames: set[str] = set()
        self.approved: set[str] = set()  # addresses of allow-listed names, as the resolver found them
        for entry in allowlist:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hostnames.add(entry.rstrip("."))

    def _allowed(self, ip: IPAddress) -> bool:
        if any(ip in network for network in self.networks if network.version == ip.version):
            return True
        # is_global is False for loopback, private, link-local, CGNAT, reserved and unspecified ranges.
        return ip.is_global and not ip.is_multicast

    def address_allowed(self, address: str) -> bool:
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner is not None:
                # Both must pass: the IPv6 form (an allow-listed IPv6 network) or, failing that, the
                # IPv4 address it reaches (::ffff:127.0.0.1 is 127.0.0.1; 64:ff9b::a00:1 is 10.0.0.1).
                return self._allowed(inner) or any(ip in net for net in self.networks if net.version == 6)
        return self._allowed(ip)

    def host_allowed(self, hostname: str) -> bool:
        """Whether a name is allow-listed as a name (its addresses are then not checked)."""
        return hostname.lower().rstrip(".") in self.hostnames

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is an IP address outside the policy, in whatever spelling
        (names are checked on resolve, and every address again on connect)."""
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        if self.host_allowed(hostname):
            return
        raw = parts.netloc.rpartition("@")[2]
        raw = raw[: raw.find("]") + 1] if raw.startswith("[") else raw.rsplit(":", 1)[0]
        host = canonical_host(raw)
        if host is None:
            raise UnsafeAddress(f"{hostname or raw!r} is not a valid host name; {REFUSED}")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return  # a name: the resolver and the socket factory check what it resolves to
        if not self.address_allowed(host):
            raise UnsafeAddress(f"{host} is a loopback/private/link-local/multicast address, {REFUSED}")

    def check_sockaddr(self, sockaddr: tuple) -> None:
        """Refuse a connection to an address outside the policy (the address actually dialled)."""
        address = str(sockaddr[0])
        if address not in self.approved and not self.address_allowed(address):
            raise UnsafeAddress(f"connection to {address} {REFUSED}")

    def socket_factory(self, addr_info: tuple) -> socket.socket:
        """aiohttp's socket factory: check the address, then open the socket as aiohttp would."""
        family, type_, proto, _canonname, sockaddr = addr_info
        self.check_sockaddr(sockaddr)
        return socket.socket(family=family, type=type_, proto=proto)


def is_refusal(exc: BaseException | None) -> bool:
    """Whether an error (however the HTTP library wrapped it) is this policy refusing an address."""
    while exc is not None:
        if isinstance(exc, UnsafeAddress) or REFUSED in str(exc):
            return True
        exc = exc.__cause__ or getattr(exc, "os_error", None)
    return False


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
            self.policy.approved.update(result["host"] for result in results)
            return results
        safe = [result for result in results if self.policy.address_allowed(result["host"])]
        if not safe:
            addresses = ", ".join(sorted({result["host"] for result in results}))
            raise UnsafeAddress(f"{host} resolves to {addresses}: loopback/private/link-local, {REFUSED}")
        return safe

    async def close(self) -> None:
        await self.inner.close()
