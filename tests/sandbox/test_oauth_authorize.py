"""The Salesforce sandbox's web server flow with PKCE, over real HTTP: the login page, codes
redirected to the callback URL, the authorization_code grant and the refresh token it issues."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from yarl import URL

from sfamp_sandbox.salesforce import Credentials, SalesforceSandbox

pytestmark = pytest.mark.integration

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
CALLBACK = "http://127.0.0.1:8430/oauth/callback"
AUTHORIZE = "/services/oauth2/authorize"
TOKEN = "/services/oauth2/token"


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.fixture
async def sandbox() -> AsyncIterator[SalesforceSandbox]:
    credentials = Credentials(callback_urls=("https://console.example/oauth/callback",))
    async with SalesforceSandbox(credentials=credentials) as sandbox:
        yield sandbox


@pytest.fixture
async def http(sandbox: SalesforceSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as client:
        yield client


def authorize_params(challenge: str | None, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "state": "st-123",
        "scope": "api refresh_token",
        **extra,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return params


async def log_in(
    http: httpx.AsyncClient, challenge: str | None, password: str = "sandbox", **extra: str
) -> httpx.Response:
    """GET the login page, then POST it the way a browser would: its hidden fields plus the
    username and password."""
    page = await http.get(AUTHORIZE, params=authorize_params(challenge, **extra))
    assert page.status_code == 200, page.text
    form = authorize_params(challenge, **extra)
    form |= {"username": "admin@sandbox.example", "password": password}
    return await http.post(AUTHORIZE, data=form)


async def get_code(http: httpx.AsyncClient, verifier: str | None, **extra: str) -> str:
    response = await log_in(http, challenge_of(verifier) if verifier else None, **extra)
    assert response.status_code == 302, response.text
    location = URL(response.headers["location"])
    assert str(location.with_query(None)) == extra.get("redirect_uri", CALLBACK)
    assert location.query["state"] == "st-123"
    return location.query["code"]


async def exchange(http: httpx.AsyncClient, code: str, **params: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        **params,
    }
    return await http.post(TOKEN, data=form)


def assert_oauth_error(response: httpx.Response, error: str, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": error, "error_description": description}


async def test_login_page_has_labelled_controls_and_no_scripts(http: httpx.AsyncClient) -> None:
    page = await http.get(AUTHORIZE, params=authorize_params(challenge_of("v" * 43)))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]  # no script runs
    html = page.text
    assert '<label for="username">Username</label>' in html
    assert '<label for="password">Password</label>' in html
    assert '<button type="submit">Log In</button>' in html
    assert "<script" not in html
    assert 'name="code_challenge"' in html  # carried to the POST


async def test_code_flow_with_pkce_issues_tokens_and_a_working_refresh_token(
    sandbox: SalesforceSandbox, http: httpx.AsyncClient
) -> None:
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier)

    response = await exchange(http, code, code_verifier=verifier)  # no secret: PKCE suffices

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"access_token", "refresh_token", "instance_url", "id", "issued_at"}
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sandbox.base_url
    assert body["id"] == f"{sandbox.base_url}/id/{sandbox.org.org_id}/{sandbox.org.admin.id}"
    signed = hmac.new(
        CLIENT_SECRET.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    ).digest()
    assert base64.b64decode(body["signature"]) == signed
    assert body["scope"] == "api refresh_token"
    userinfo = await http.get(
        "/services/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert userinfo.json()["preferred_username"] == "admin@sandbox.example"

    refreshed = await http.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    new_token = refreshed.json()["access_token"]
    assert new_token != body["access_token"]
    limits = await http.get(
        "/services/data/v62.0/limits/", headers={"Authorization": f"Bearer {new_token}"}
    )
    assert limits.status_code == 200

    revoked = await http.post("/services/oauth2/revoke", data={"token": body["refresh_token"]})
    assert revoked.status_code == 200
    again = await http.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
        | {"client_id": CLIENT_ID},
    )
    assert_oauth_error(again, "invalid_grant", "expired access/refresh token")


async def test_wrong_verifier_is_refused_and_spends_the_code(http: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier)

    wrong = await exchange(http, code, code_verifier=secrets.token_urlsafe(64))
    assert_oauth_error(wrong, "invalid_grant", "invalid code verifier")
    right = await exchange(http, code, code_verifier=verifier)
    assert_oauth_error(right, "invalid_grant", "expired authorization code")

    missing = await exchange(http, await get_code(http, verifier))
    assert_oauth_error(missing, "invalid_grant", "invalid code verifier")


async def test_a_code_works_once_and_only_for_its_callback_url(http: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier)
    assert (await exchange(http, code, code_verifier=verifier)).status_code == 200
    reused = await exchange(http, code, code_verifier=verifier)
    assert_oauth_error(reused, "invalid_grant", "expired authorization code")

    other = await get_code(http, verifier)
    moved = await exchange(
        http, other, code_verifier=verifier, redirect_uri="http://127.0.0.1:9999/oauth/callback"
    )
    assert_oauth_error(moved, "redirect_uri_mismatch", "redirect_uri must match configuration")

    unknown = await exchange(http, "aPrxnot-a-code", code_verifier=verifier)
    assert_oauth_error(unknown, "invalid_grant", "invalid authorization code")


async def test_a_code_expires_after_15_minutes(
    sandbox: SalesforceSandbox, http: httpx.AsyncClient
) -> None:
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier)
    advanced = await http.post("/__sandbox/clock", json={"advance_seconds": 15 * 60 + 1})
    assert advanced.status_code == 200
    late = await exchange(http, code, code_verifier=verifier)
    assert_oauth_error(late, "invalid_grant", "expired authorization code")


async def test_without_pkce_the_secret_is_required(http: httpx.AsyncClient) -> None:
    no_secret = await exchange(http, await get_code(http, None))
    assert_oauth_error(no_secret, "invalid_client", "invalid client credentials")
    with_secret = await exchange(http, await get_code(http, None), client_secret=CLIENT_SECRET)
    assert with_secret.status_code == 200, with_secret.text
    wrong_secret = await exchange(http, await get_code(http, None), client_secret="nope")
    assert_oauth_error(wrong_secret, "invalid_client", "invalid client credentials")


async def test_scope_without_refresh_token_issues_none(http: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier, scope="api")
    body = (await exchange(http, code, code_verifier=verifier)).json()
    assert body["scope"] == "api"
    assert "refresh_token" not in body


async def test_configured_callback_url_is_accepted(http: httpx.AsyncClient) -> None:
    callback = "https://console.example/oauth/callback"
    verifier = secrets.token_urlsafe(64)
    code = await get_code(http, verifier, redirect_uri=callback)
    response = await exchange(http, code, code_verifier=verifier, redirect_uri=callback)
    assert response.status_code == 200, response.text


async def test_wrong_password_shows_the_page_again(http: httpx.AsyncClient) -> None:
    response = await log_in(http, challenge_of("v" * 43), password="wrong")
    assert response.status_code == 200
    assert "Please check your username and password." in response.text
    assert 'role="alert"' in response.text
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"client_id": "someone-else"}, "error=invalid_client_id: client identifier invalid"),
        (
            {"redirect_uri": "http://evil.example/oauth/callback"},
            "error=redirect_uri_mismatch: redirect_uri must match configuration",
        ),
        (
            {"redirect_uri": "http://127.0.0.1:8430/elsewhere"},
            "error=redirect_uri_mismatch: redirect_uri must match configuration",
        ),
    ],
)
async def test_untrusted_client_or_callback_is_shown_not_redirected(
    http: httpx.AsyncClient, change: dict[str, str], text: str
) -> None:
    for response in (
        await http.get(AUTHORIZE, params=authorize_params(None, **change)),
        await http.post(
            AUTHORIZE,
            data=authorize_params(None, **change)
            | {"username": "admin@sandbox.example", "password": "sandbox"},
        ),
    ):
        assert response.status_code == 400
        assert text in response.text
        assert "location" not in response.headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge": challenge_of("v" * 43), "code_challenge_method": "plain"}, None),
    ],
)
async def test_bad_requests_go_back_to_the_callback_with_the_error(
    http: httpx.AsyncClient, change: dict[str, str], error: str | None
) -> None:
    response = await http.get(AUTHORIZE, params=authorize_params(None, **change))
    assert response.status_code == 302
    location = URL(response.headers["location"])
    assert str(location.with_query(None)) == CALLBACK
    assert location.query["error"] == (error or "invalid_request")
    assert location.query["error_description"]
    assert location.query["state"] == "st-123"
