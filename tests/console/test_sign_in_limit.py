"""Failed sign-ins are limited per client address: the console token cannot be guessed at speed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from pipeline.config.settings import Settings
from pipeline.console.app import create_console_app
from pipeline.console.sign_in_limit import MAX_FAILURES, WINDOW_SECONDS, SignInLimiter, client_key
from tests.console.conftest import csrf_of

Client = TestClient[Any, Any]
TOKEN = "console-token-for-the-tests"
WRONG = "That is not the console token."
THROTTLED = "Too many failed sign-ins from this address; try again in {} s."


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def signing_in(clock: Clock) -> AsyncIterator[Client]:
    """The console with a token, on ``clock``; no Salesforce or Kafka is reached."""
    settings = Settings(_env_file=None, console={"token": TOKEN}, runtime={"health_port": 0})
    app = create_console_app(settings, clock=clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def sign_in(client: Client, token: str) -> tuple[int, str, dict[str, str]]:
    csrf = await csrf_of(client, "/login")
    response = await client.post(
        "/login", data={"csrf_token": csrf, "token": token}, allow_redirects=False
    )
    return response.status, await response.text(), dict(response.headers)


async def test_past_the_limit_even_the_right_token_waits_for_the_window() -> None:
    clock = Clock()
    async with signing_in(clock) as client:
        with capture_logs() as logs:
            for _ in range(MAX_FAILURES):
                status, text, _ = await sign_in(client, "a-wrong-guess-of-the-token")
                assert (status, WRONG in text) == (403, True)
            status, text, headers = await sign_in(client, TOKEN)
        assert status == 429
        assert headers["Retry-After"] == "300"
        assert THROTTLED.format(300) in text
        throttled = [entry for entry in logs if entry["event"] == "console_sign_in_throttled"]
        assert len(throttled) == 1, logs
        assert throttled[0]["log_level"] == "warning"
        assert throttled[0]["address"] == "127.0.0.1"
        assert TOKEN not in repr(logs)

        clock.now += WINDOW_SECONDS - 1
        status, text, headers = await sign_in(client, TOKEN)
        assert (status, headers["Retry-After"]) == (429, "1")
        assert THROTTLED.format(1) in text

        clock.now += 1
        status, _, headers = await sign_in(client, TOKEN)
        assert (status, headers["Location"]) == (303, "/")
        assert (await client.get("/", allow_redirects=False)).status == 200


async def test_a_successful_sign_in_starts_the_count_afresh() -> None:
    async with signing_in(Clock()) as client:
        for _ in range(MAX_FAILURES - 1):
            assert (await sign_in(client, "a-wrong-guess-of-the-token"))[0] == 403
        assert (await sign_in(client, TOKEN))[0] == 303
        for _ in range(MAX_FAILURES):
            assert (await sign_in(client, "a-wrong-guess-of-the-token"))[0] == 403
        assert (await sign_in(client, "a-wrong-guess-of-the-token"))[0] == 429


def test_addresses_are_counted_apart() -> None:
    clock = Clock()
    limiter = SignInLimiter(max_failures=3, window=60, clock=clock)
    assert [limiter.failed("192.0.2.1") for _ in range(3)] == [0, 0, 60]
    assert limiter.retry_after("192.0.2.1") == 60
    assert limiter.retry_after("::ffff:192.0.2.1") == 60  # the same IPv4 address
    assert limiter.retry_after("192.0.2.2") == 0
    assert limiter.failed("192.0.2.2") == 0
    limiter.succeeded("192.0.2.2")
    assert limiter.retry_after("192.0.2.1") == 60  # another address's success clears nothing


def test_ipv6_addresses_count_by_their_64_network() -> None:
    limiter = SignInLimiter(max_failures=2, window=60, clock=Clock())
    limiter.failed("2001:db8:0:1::1")
    limiter.failed("2001:db8:0:1:ffff::2")  # the same /64: one host with many addresses
    assert limiter.retry_after("2001:db8:0:1::3") == 60
    assert limiter.retry_after("2001:db8:0:2::1") == 0
    assert client_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert client_key(None) == "unknown"


def test_the_window_slides_over_each_failure() -> None:
    clock = Clock()
    limiter = SignInLimiter(max_failures=3, window=300, clock=clock)
    for _ in range(3):
        limiter.failed("192.0.2.1")
        clock.now += 100  # failures at 0, 100 and 200
    assert limiter.retry_after("192.0.2.1") == 0  # at 300 the first one has left the window
    assert limiter.failed("192.0.2.1") == 100  # the next failure blocks until 100 + 300
    clock.now += 99.5
    assert limiter.retry_after("192.0.2.1") == 1
    clock.now += 0.5
    assert limiter.retry_after("192.0.2.1") == 0


def test_memory_is_bounded_by_dropping_the_oldest_address() -> None:
    clock = Clock()
    limiter = SignInLimiter(max_failures=2, window=60, max_addresses=3, clock=clock)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        limiter.failed(address)
        limiter.failed(address)
    limiter.failed("192.0.2.4")
    assert len(limiter) == 3
    assert limiter.retry_after("192.0.2.1") == 0  # dropped: its failures are forgotten
    assert limiter.retry_after("192.0.2.2") == 60
    assert limiter.retry_after("192.0.2.4") == 0
    clock.now += 60
    assert limiter.retry_after("192.0.2.2") == 0
    assert len(limiter) == 2  # an address whose failures left the window is forgotten
