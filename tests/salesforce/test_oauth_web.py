"""The web server flow's helpers: PKCE values, the authorize URL, and the code exchange's
answers and one-line errors (httpx.MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from pipeline.config.settings import SalesforceSettings
from pipeline.errors import (
    SalesforceAuthError,
    SalesforceError,
    SalesforceUnavailableError,
    SettingsError,
)
from pipeline.salesforce.oauth_web import (
    WebLogin,
    authorize_url,
    code_challenge,
    connected_username,
    exchange_code,
    make_code_verifier,
    make_state,
)

SECRET = "very-secret-value"
CALLBACK = "http://127.0.0.1:8430/oauth/callback"
TOKEN_BODY = {
    "access_token": "00D!access",
    "refresh_token": "5Aep-refresh",
    "instance_url": "https://acme.my.salesforce.com/",
    "id": "https://login.salesforce.com/id/00D/005",
    "issued_at": "1714156685123",
    "signature": "c2ln",
    "token_type": "Bearer",
    "scope": "api refresh_token",
}


def settings(**changes: object) -> SalesforceSettings:
    values: dict[str, object] = {
        "login_url": "https://login.example",
        "client_id": "cid",
        "client_secret": SecretStr(SECRET),
    }
    return SalesforceSettings.model_validate(values | changes)


def client(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def exchange(
    answer: Callable[[httpx.Request], httpx.Response], **changes: object
) -> WebLogin:
    async with client(answer) as http:
        return await exchange_code(
            settings(**changes), http, code="the-code", redirect_uri=CALLBACK, code_verifier="v"
        )


def test_verifier_and_challenge_follow_rfc_7636() -> None:
    verifier = make_code_verifier()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,128}", verifier)
    assert make_code_verifier() != verifier
    # RFC 7636 appendix B
    assert (
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    digest = hashlib.sha256(verifier.encode()).digest()
    assert code_challenge(verifier) == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(make_state()) >= 43
    assert make_state() != make_state()


def test_authorize_url_names_every_parameter() -> None:
    url = authorize_url(settings(), redirect_uri=CALLBACK, state="st", challenge="ch")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://login.example/services/oauth2/authorize"
    )
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": CALLBACK,
        "scope": "api refresh_token",
        "state": "st",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
    }
    assert SECRET not in url


def test_authorize_url_needs_a_client_id() -> None:
    with pytest.raises(SettingsError, match="SFAMP_SALESFORCE__CLIENT_ID"):
        authorize_url(settings(client_id=""), redirect_uri=CALLBACK, state="s", challenge="c")


async def test_exchange_posts_the_code_grant_and_returns_the_tokens() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=TOKEN_BODY)

    login = await exchange(answer)

    [request] = seen
    assert str(request.url) == "https://login.example/services/oauth2/token"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "client_id": "cid",
        "client_secret": SECRET,
        "redirect_uri": CALLBACK,
        "code_verifier": "v",
    }
    assert login.refresh_token == "5Aep-refresh"
    token = login.token
    assert token.instance_url == "https://acme.my.salesforce.com"
    assert token.issued_at_ms == 1714156685123
    assert "5Aep" not in repr(login)
    assert "00D!" not in repr(login)


async def test_exchange_without_a_secret_sends_none() -> None:
    forms: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        forms.append(request.content.decode())
        return httpx.Response(200, json=TOKEN_BODY)

    await exchange(answer, client_secret=None)
    assert "client_secret" not in forms[0]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "invalid code verifier"},
            SalesforceAuthError,
            "Salesforce refused the sign-in: invalid code verifier (invalid_grant); the code was",
        ),
        (
            400,
            {"error": "invalid_client", "error_description": "invalid client credentials"},
            SalesforceAuthError,
            "check SFAMP_SALESFORCE__CLIENT_SECRET",
        ),
        (400, {"error": "redirect_uri_mismatch"}, SalesforceAuthError, "Callback URLs"),
        (503, {}, SalesforceUnavailableError, "answered 503"),
        (200, {"instance_url": "x"}, SalesforceError, "lacks access_token"),
        (
            200,
            {k: v for k, v in TOKEN_BODY.items() if k != "refresh_token"},
            SalesforceAuthError,
            "issued no refresh token",
        ),
    ],
)
async def test_exchange_failures_are_one_line_without_the_secret(
    status: int, body: dict[str, str], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as caught:
        await exchange(lambda _: httpx.Response(status, json=body))
    message = str(caught.value)
    assert text in message
    assert "\n" not in message
    assert SECRET not in message
    assert "the-code" not in message


async def test_exchange_when_salesforce_cannot_be_reached() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SalesforceUnavailableError, match="cannot reach Salesforce"):
        await exchange(refuse)


async def test_connected_username_reads_userinfo() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer 00D!access"
        assert str(request.url) == "https://acme.my.salesforce.com/services/oauth2/userinfo"
        return httpx.Response(200, json={"preferred_username": "ops@acme.example"})

    login = await exchange(lambda _: httpx.Response(200, json=TOKEN_BODY))
    async with client(answer) as http:
        assert await connected_username(http, login.token) == "ops@acme.example"
