"""What every request passes before any route sees it: a trusted Host header and a bounded body.

Host check. A web page on another site can make the browser of someone on the same machine or LAN send
requests to the factory; with DNS rebinding (evil.example resolving to 127.0.0.1) even the same-origin
policy lets that page read the answers and POST /api/control. Such a request still names the attacker's
host in its Host header, so only these names are answered: localhost, the loopback addresses, HOST,
ALLOWED_HOSTS (exact names, *.example.com, or * for any), and, when HOST is a wildcard (0.0.0.0, ::),
the machine's own host names and addresses, so the LAN setup keeps working by IP or by name.

Body limit. Requests larger than MAX_REQUEST_BYTES get 413 before anything reads them, authentication
included: a declared Content-Length is checked up front, a chunked body as it arrives.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import psutil
from fastapi import HTTPException

from aifactory.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = {"localhost", "127.0.0.1", "::1"}
REFRESH_SEC = 10.0  # with a wildcard bind, a miss re-reads the machine's addresses at most this often


def host_of(header: str) -> str:
    """The host name of a Host header value: no port, no IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def machine_names() -> set[str]:
    """This machine's host names and the addresses of its network interfaces."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.split("%", 1)[0].lower())
    return names


class TrustedHosts:
    def __init__(self, settings: Settings) -> None:
        self.wildcard_bind = settings.host_is_wildcard
        self.any = "*" in settings.allowed_hosts
        self.exact = (
            LOOPBACK
            | {host_of(settings.host)}
            | {name.lower() for name in settings.allowed_hosts if not name.startswith("*")}
        )
        self.suffixes = tuple(name[1:].lower() for name in settings.allowed_hosts if name.startswith("*."))
        self.machine: set[str] = machine_names() if self.wildcard_bind else set()
        self.refreshed = time.monotonic()

    def allowed(self, host: str) -> bool:
        if self.any or host in self.exact or host in self.machine:
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        try:
            if ipaddress.ip_address(host).is_loopback:
                return True
        except ValueError:
            pass
        if self.wildcard_bind and time.monotonic() - self.refreshed > REFRESH_SEC:
            self.machine, self.refreshed = machine_names(), time.monotonic()  # a new DHCP lease, say
            return host in self.machine
        return False


class RequestGuards:
    """ASGI middleware applying both checks, added last so that it runs before any other."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = TrustedHosts(settings)
        self.max_bytes = settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        host = host_of(headers.get("host", ""))
        if not self.hosts.allowed(host):
            shown = host or "(none)"
            await _reply(
                send,
                scope,
                400,
                f"host {shown!r} is not allowed: use this server's own name or address, or add the name to "
                "ALLOWED_HOSTS",
            )
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _reply(send, scope, 413, self._too_large())
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body without a length: cut it off here
                    raise HTTPException(status_code=413, detail=self._too_large())
            return message

        await self.app(scope, bounded_receive, send)

    def _too_large(self) -> str:
        return f"request body larger than MAX_REQUEST_BYTES ({self.max_bytes} bytes)"


async def _reply(send: Send, scope: Scope, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
