"""Behind a trusted reverse proxy the console sees the forwarded client, scheme and host."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config.settings import Settings, load_settings
from pipeline.console.app import create_console_app
from pipeline.console.proxies import Network, forwarded_client, forwarded_host, is_trusted
from pipeline.console.server import check_exposure
from pipeline.console.sign_in_limit import MAX_FAILURES
from pipeline.errors import ConfigError, SettingsError
from tests.console.conftest import csrf_of

Client = TestClient[Any, Any]
TOKEN = "console-token-for-the-tests"
PROXIES: list[Network] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a proxy: its headers are ignored
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # spoofed left part
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # one header per hop
        ("::1", ["2001:db8::5"], "2001:db8::5"),
        ("::ffff:10.1.2.3", ["198.51.100.1"], "198.51.100.1"),  # IPv4 mapped into IPv6
        ("10.1.2.3", ["10.4.4.4"], "10.1.2.3"),  # only proxies: the nearest one
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["not-an-address, 198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["198.51.100.1, not-an-address"], "10.1.2.3"),  # the chain breaks there
        ("10.1.2.3", ["198.51.100.1:4711"], "198.51.100.1"),  # a port is not part of the client
        ("10.1.2.3", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("10.1.2.3", ["[2001:db8::5]"], "2001:db8::5"),
        ("10.1.2.3", ["unknown"], "10.1.2.3"),
    ],
)
def test_the_client_is_the_rightmost_address_no_trusted_proxy_added(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, PROXIES) == client


@pytest.mark.parametrize(
    ("host", "port", "scheme", "forwarded"),
    [
        ("console.example.com", "", "https", "console.example.com"),
        ("evil.example, console.example.com", "", "https", "console.example.com"),  # nearest
        ("console.example.com", "8443", "https", "console.example.com:8443"),
        ("console.example.com", "443", "https", "console.example.com"),
        ("console.example.com:8443", "8443", "https", "console.example.com:8443"),
        ("[2001:db8::1]", "8443", "https", "[2001:db8::1]:8443"),
        ("evil.example@localhost", "", "http", None),
        ("localhost/path", "", "http", None),
        ("two words", "", "http", None),
        ("", "443", "https", None),
    ],
)
def test_the_host_is_the_nearest_proxy_s_plain_name_and_port(
    host: str, port: str, scheme: str, forwarded: str | None
) -> None:
    assert forwarded_host(host, port, scheme) == forwarded


def test_trusting_a_proxy_needs_the_token() -> None:
    settings = Settings(_env_file=None, console={"trusted_proxies": "10.0.0.0/8"})
    with pytest.raises(ConfigError, match="set SFAMP_CONSOLE__TOKEN"):
        check_exposure("127.0.0.1", settings)
    check_exposure("127.0.0.1", Settings(_env_file=None, console={"token": TOKEN}))


def test_nothing_is_trusted_without_proxies_or_an_address() -> None:
    assert not is_trusted("10.1.2.3", [])
    assert not is_trusted(None, PROXIES)
    assert not is_trusted("proxy.internal", PROXIES)
    assert is_trusted("fe80::1%eth0", [ipaddress.ip_network("fe80::/10")])


def test_trusted_proxies_are_read_comma_separated_and_refused_by_value() -> None:
    settings = Settings(_env_file=None, console={"trusted_proxies": "10.0.0.0/8, 192.0.2.7,::1"})
    assert [str(n) for n in settings.console.trusted_proxies] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "::1/128",
    ]
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, console={"trusted_proxies": "10.0.0.0/8,10.0.0.0/33"})
    assert [str(p) for p in refused.value.problems] == [
        "SFAMP_CONSOLE__TRUSTED_PROXIES: '10.0.0.0/33' is not an IP address or network"
    ]


@pytest.mark.parametrize(
    ("written", "client", "trusted"),
    [
        ("::ffff:10.0.0.0/104", "10.1.2.3", True),
        ("::ffff:10.0.0.0/104", "::ffff:10.1.2.3", True),
        ("::ffff:10.0.0.0/104", "11.1.2.3", False),
        ("::ffff:192.0.2.7", "192.0.2.7", True),
        ("::/0", "10.1.2.3", True),
        ("2001:db8::/32", "10.1.2.3", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),
    ],
)
def test_ipv4_mapped_networks_and_clients_compare_as_ipv4(
    written: str, client: str, trusted: bool
) -> None:
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; either way of
    # writing a network or an address means the same hosts.
    settings = Settings(_env_file=None, console={"trusted_proxies": written})
    assert is_trusted(client, settings.console.trusted_proxies) is trusted


@contextlib.asynccontextmanager
async def console(trusted: str) -> AsyncIterator[Client]:
    """The console with a token, served on 127.0.0.1, trusting ``trusted`` as proxies."""
    settings = Settings(
        _env_file=None,
        console={"token": TOKEN, "trusted_proxies": trusted},
        runtime={"health_port": 0},
    )
    async with TestClient(TestServer(create_console_app(settings), host="127.0.0.1")) as client:
        yield client


async def failed_sign_in(client: Client, forwarded_for: str) -> int:
    csrf = await csrf_of(client, "/login")
    response = await client.post(
        "/login",
        data={"csrf_token": csrf, "token": "a-wrong-guess-of-the-token"},
        headers={"X-Forwarded-For": forwarded_for},
        allow_redirects=False,
    )
    return response.status


async def test_behind_a_trusted_proxy_each_client_has_its_own_sign_in_count() -> None:
    async with console("127.0.0.1") as client:
        statuses = [await failed_sign_in(client, "203.0.113.7") for _ in range(MAX_FAILURES + 1)]
        assert statuses == [403] * MAX_FAILURES + [429]
        assert await failed_sign_in(client, "198.51.100.9") == 403, "another client was throttled"


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    async with console("10.0.0.0/8") as client:  # the test client's 127.0.0.1 is not a proxy
        for n in range(MAX_FAILURES):
            assert await failed_sign_in(client, f"203.0.113.{n}") == 403
        assert await failed_sign_in(client, "198.51.100.9") == 429, "a made-up header escaped"


async def test_the_forwarded_scheme_and_host_make_cookies_secure_and_origins_match() -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "console.example.com"}
    async with console("127.0.0.1") as client:
        plain = await client.get("/login", headers={"X-Forwarded-Proto": "http"})
        assert "Secure" not in plain.headers["Set-Cookie"], "a Secure cookie over plain HTTP"
        client.session.cookie_jar.clear()
        page = await client.get("/login", headers=forwarded)
        assert page.status == 200
        cookie = page.headers["Set-Cookie"]
        assert "Secure" in cookie, cookie
        # The browser's Origin is the public one: not refused as another site (the CSRF
        # check then refuses this cookie-less request).
        posted = await client.post(
            "/login", headers={**forwarded, "Origin": "https://console.example.com"}
        )
        text = await posted.text()
        assert posted.status == 403
        assert "cannot change this console" not in text, text
        assert "CSRF" in text, text
