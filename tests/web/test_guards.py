"""Requests are checked before any route runs: a Host the server answers to, a bounded body, JSON typed."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from aifactory.cluster import engine_state
from aifactory.db import Database
from aifactory.web.guards import TrustedHosts, host_of

TOKEN = "correct horse battery staple"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """These checks are about HTTP, not the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'factory.db'}"


def test_a_dns_rebinding_request_is_refused_before_it_can_ignite(db: Database, serve: Any) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 posts to the factory."""
    client, _ = serve()  # the default setup: loopback, no token
    reply = client.post("/api/control", json={"action": "start"}, headers={"Host": "evil.example:8000"})
    assert reply.status_code == 400
    assert (
        "'evil.example' is not allowed" in reply.json()["detail"]
        and "ALLOWED_HOSTS" in reply.json()["detail"]
    )
    assert engine_state.desired_states(db, "api-node") == {"ticker": "stopped"}  # nothing was started
    assert client.get("/api/status", headers={"Host": "evil.example"}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "127.0.0.2"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_adds_names_and_subdomains(serve: Any) -> None:
    client, _ = serve(allowed_hosts=["factory.home.arpa", "*.example.org"])
    for host, expected in [
        ("factory.home.arpa", 200),
        ("FACTORY.home.arpa:8000", 200),
        ("lab.example.org", 200),
        ("example.org", 400),
        ("badexample.org", 400),
        ("factory.home.arpa.evil.example", 400),
    ]:
        assert client.get("/healthz", headers={"Host": host}).status_code == expected, host


def test_a_wildcard_bind_trusts_the_machines_own_names_and_addresses(make_settings: Any) -> None:
    """HOST=0.0.0.0 is the README's LAN setup: the dashboard is opened by the machine's IP or name."""
    hosts = TrustedHosts(make_settings(host="0.0.0.0", allowed_hosts=[]))
    assert hosts.allowed(socket.gethostname().lower())
    addresses = [
        a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET
    ]
    assert addresses and all(hosts.allowed(address) for address in addresses)
    assert not hosts.allowed("evil.example")
    lan = next((a for a in addresses if not a.startswith("127.")), None)
    if lan is not None:  # bound to loopback only, the machine's LAN address is not a name it answers to
        assert not TrustedHosts(make_settings(host="127.0.0.1", allowed_hosts=[])).allowed(lan)
    assert TrustedHosts(make_settings(allowed_hosts=["*"])).allowed("anything.example")


def test_host_header_parsing() -> None:
    assert host_of("Example.COM:8000") == "example.com"
    assert host_of("[::1]:8000") == "::1" and host_of("[fe80::1]") == "fe80::1"
    assert host_of("") == ""


def test_a_large_body_is_refused_before_authentication(serve: Any) -> None:
    client, _ = serve(admin_api_token=TOKEN, max_request_bytes=4096)
    big = b'{"action": "start", "pad": "' + b"x" * 10_000 + b'"}'
    reply = client.post("/api/control", content=big, headers={"content-type": "application/json"})
    assert reply.status_code == 413 and "MAX_REQUEST_BYTES (4096 bytes)" in reply.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit applies as the body arrives
        for _ in range(10):
            yield b"x" * 1000

    headers = {"content-type": "application/json", "x-admin-token": TOKEN}
    assert client.post("/api/control", content=chunks(), headers=headers).status_code == 413
    small = client.post("/api/control", json={"action": "stop"}, headers={"x-admin-token": TOKEN})
    assert small.status_code == 200


def test_json_without_a_json_content_type_is_refused(db: Database, serve: Any) -> None:
    """A cross-site form or text/plain POST cannot pass for JSON (FastAPI >= 0.132 checks the type)."""
    client, _ = serve()
    reply = client.post(
        "/api/control", content=b'{"action": "start"}', headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 422
    assert engine_state.desired_states(db, "api-node") == {"ticker": "stopped"}
