"""Connect to Salesforce end to end: the console (in-process, on a real port) sends the
browser to the Salesforce sandbox's login page, the login redirects back with a code, the
console exchanges it and shows the refresh token once. httpx plays the browser: it keeps
cookies and follows redirects across both servers."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from yarl import URL

from pipeline.config.settings import Settings
from pipeline.console.app import create_console_app
from sfamp_sandbox.salesforce import SalesforceSandbox

pytestmark = pytest.mark.integration

HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
TOKEN_AREA = re.compile(r'data-testid="refresh-token">([^<]+)</textarea>')
START_AGAIN = "start again with Connect to Salesforce"


@dataclass
class Stack:
    sandbox: SalesforceSandbox
    console_url: str = ""
    now: list[float] = field(default_factory=lambda: [1_000_000.0])

    def browser(self) -> httpx.AsyncClient:
        """A fresh browser: its own cookies, following redirects."""
        return httpx.AsyncClient(follow_redirects=True, timeout=10)


def console_settings(sandbox: SalesforceSandbox, **salesforce: Any) -> Settings:
    """No stored credentials: the operator is about to get a refresh token."""
    values = {
        "login_url": sandbox.base_url,
        "auth_flow": "refresh_token",
        "client_id": "sandbox-client",
        **salesforce,
    }
    return Settings(_env_file=None, salesforce=values, runtime={"health_port": 0})


@contextlib.asynccontextmanager
async def running_console(settings: Settings, stack: Stack) -> AsyncIterator[str]:
    app = create_console_app(settings, clock=lambda: stack.now[0])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with SalesforceSandbox() as sandbox:
        stack = Stack(sandbox)
        async with running_console(console_settings(sandbox), stack) as url:
            stack.console_url = url
            yield stack


async def to_login_page(stack: Stack, browser: httpx.AsyncClient) -> httpx.Response:
    """Connect to Salesforce: the console redirects to the sandbox's login page."""
    page = await browser.get(f"{stack.console_url}/oauth/start")
    assert page.status_code == 200, page.text
    assert page.url.path == "/services/oauth2/authorize"
    assert "Log In" in page.text
    return page


async def log_in(stack: Stack, browser: httpx.AsyncClient, *, follow: bool) -> httpx.Response:
    """Fill in the login form as a browser would and submit it."""
    page = await to_login_page(stack, browser)
    form = {name: html.unescape(value) for name, value in HIDDEN.findall(page.text)}
    form |= {"username": "admin@sandbox.example", "password": "sandbox"}
    return await browser.post(
        f"{stack.sandbox.base_url}/services/oauth2/authorize", data=form, follow_redirects=follow
    )


async def test_connect_shows_a_working_refresh_token_once(stack: Stack) -> None:
    async with stack.browser() as browser:
        page = await log_in(stack, browser, follow=True)

        assert page.status_code == 200, page.text
        assert page.url.path == "/oauth/callback"
        assert "Connected to Salesforce" in page.text
        assert "admin@sandbox.example" in page.text
        assert "SFAMP_SALESFORCE__REFRESH_TOKEN" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        [refresh_token] = TOKEN_AREA.findall(page.text)

        again = await browser.get(page.url)  # a reload
        assert again.status_code == 400
        assert refresh_token not in again.text
        assert START_AGAIN in again.text

    async with httpx.AsyncClient(base_url=stack.sandbox.base_url, timeout=10) as http:
        refreshed = await http.post(
            "/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": html.unescape(refresh_token),
                "client_id": "sandbox-client",
            },
        )
    assert refreshed.status_code == 200, refreshed.text


async def test_start_keeps_the_verifier_and_binds_the_state_to_the_browser(
    stack: Stack,
) -> None:
    async with stack.browser() as browser:
        start = await browser.get(f"{stack.console_url}/oauth/start", follow_redirects=False)
    assert start.status_code == 303
    target = URL(start.headers["location"])
    assert str(target.with_query(None)) == f"{stack.sandbox.base_url}/services/oauth2/authorize"
    assert target.query["redirect_uri"] == f"{stack.console_url}/oauth/callback"
    assert target.query["code_challenge_method"] == "S256"
    assert len(target.query["code_challenge"]) == 43
    assert "code_verifier" not in target.query
    cookie = start.headers["set-cookie"]
    assert f"sfamp_oauth_state={target.query['state']}" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/oauth/callback" in cookie


async def test_state_mismatch_is_refused_and_leaves_the_sign_in_open(stack: Stack) -> None:
    async with stack.browser() as browser:
        back = await log_in(stack, browser, follow=False)
        callback = URL(back.headers["location"])

        forged = await browser.get(str(callback.update_query(state="someone-elses-state")))
        assert forged.status_code == 400
        assert "state mismatch" in forged.text
        assert 'data-testid="refresh-token"' not in forged.text

        genuine = await browser.get(str(callback))
        assert genuine.status_code == 200, genuine.text
        assert TOKEN_AREA.search(genuine.text)


async def test_a_callback_in_another_browser_shows_nothing(stack: Stack) -> None:
    async with stack.browser() as browser:
        back = await log_in(stack, browser, follow=False)
        callback = back.headers["location"]
        async with stack.browser() as other:
            stolen = await other.get(callback)
        assert stolen.status_code == 400
        assert "No sign-in to Salesforce is in progress in this browser" in stolen.text
        assert 'data-testid="refresh-token"' not in stolen.text

        mine = await browser.get(callback)  # the code was not spent by the other browser
        assert mine.status_code == 200, mine.text


async def test_salesforce_refusals_are_one_line(stack: Stack) -> None:
    async with stack.browser() as browser:
        back = await log_in(stack, browser, follow=False)
        advanced = await browser.post(
            f"{stack.sandbox.base_url}/__sandbox/clock", json={"advance_seconds": 16 * 60}
        )
        assert advanced.status_code == 200
        late = await browser.get(back.headers["location"])
    assert late.status_code == 502
    [message] = re.findall(r'role="alert">([^<]*)</p>', late.text)
    assert "expired authorization code (invalid_grant)" in html.unescape(message)

    async with stack.browser() as browser:
        page = await to_login_page(stack, browser)
        state = URL(str(page.url)).query["state"]
        denied = await browser.get(
            f"{stack.console_url}/oauth/callback",
            params={"error": "access_denied", "error_description": "end-user denied authorization"}
            | {"state": state},
        )
    assert denied.status_code == 400
    assert "end-user denied authorization (access_denied)" in denied.text


async def test_a_sign_in_lasts_ten_minutes(stack: Stack) -> None:
    async with stack.browser() as browser:
        back = await log_in(stack, browser, follow=False)
        stack.now[0] += 601
        late = await browser.get(back.headers["location"])
    assert late.status_code == 400
    assert "took longer than ten minutes" in late.text


async def test_without_a_client_id_start_names_the_setting(stack: Stack) -> None:
    settings = console_settings(stack.sandbox, client_id="")
    async with running_console(settings, stack) as url, stack.browser() as browser:
        page = await browser.get(f"{url}/oauth/start")
    assert page.status_code == 400
    assert "SFAMP_SALESFORCE__CLIENT_ID" in page.text


async def test_with_a_console_token_connecting_needs_the_sign_in(stack: Stack) -> None:
    settings = console_settings(stack.sandbox)
    settings = settings.model_copy(
        update={"console": settings.console.model_copy(update={"token": SecretStr("t" * 24)})}
    )
    async with running_console(settings, stack) as url, stack.browser() as browser:
        start = await browser.get(f"{url}/oauth/start")
        callback = await browser.get(f"{url}/oauth/callback", params={"code": "c", "state": "s"})
    for page in (start, callback):
        assert page.url.path == "/login"
        assert "Console token" in page.text
