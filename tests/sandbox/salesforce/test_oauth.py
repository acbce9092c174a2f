"""OAuth flows, error bodies, identity, revocation and session expiry over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest

from sfamp_sandbox.salesforce import SalesforceSandbox

from .conftest import API, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME

pytestmark = pytest.mark.integration


def _jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


async def _token(sf: SalesforceSandbox, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sf.base_url, timeout=10) as client:
        return await client.post("/services/oauth2/token", data=params)


async def test_password_grant_returns_documented_fields(
    salesforce_sandbox: SalesforceSandbox,
) -> None:
    response = await _token(
        salesforce_sandbox,
        grant_type="password",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        username=USERNAME,
        password=PASSWORD,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    org_id = salesforce_sandbox.org.org_id
    user_id = salesforce_sandbox.org.admin.id
    assert body["access_token"].startswith(org_id[:15] + "!")
    assert body["instance_url"] == salesforce_sandbox.base_url
    assert body["id"] == f"{salesforce_sandbox.base_url}/id/{org_id}/{user_id}"
    assert body["token_type"] == "Bearer"
    assert abs(int(body["issued_at"]) - time.time() * 1000) < 60_000
    expected = hmac.new(
        CLIENT_SECRET.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    ).digest()
    assert base64.b64decode(body["signature"]) == expected
    assert "api" in body["scope"].split()
    assert "refresh_token" not in body


@pytest.mark.parametrize(
    "params",
    [
        {"grant_type": "refresh_token", "refresh_token": "sandbox-refresh-token"},
        {"grant_type": "client_credentials", "client_secret": CLIENT_SECRET},
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"},
    ],
    ids=["refresh_token", "client_credentials", "jwt"],
)
async def test_other_grants_issue_working_tokens(
    salesforce_sandbox: SalesforceSandbox, params: dict[str, str]
) -> None:
    if params["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        # Signed now, not at collection: a long suite must not outlive the assertion's exp.
        claims = {"iss": CLIENT_ID, "sub": USERNAME, "aud": "x", "exp": int(time.time()) + 300}
        params = {**params, "assertion": _jwt(claims)}
    else:
        params = {**params, "client_id": CLIENT_ID}
    response = await _token(salesforce_sandbox, **params)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as client:
        limits = await client.get(f"{API}/limits/", headers={"Authorization": f"OAuth {token}"})
    assert limits.status_code == 200
    assert limits.json()["DailyApiRequests"]["Max"] == 15_000


async def test_query_string_parameters_are_accepted(salesforce_sandbox: SalesforceSandbox) -> None:
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as client:
        response = await client.post(
            "/services/oauth2/token",
            params={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


@pytest.mark.parametrize(
    ("params", "error", "description"),
    [
        (
            {
                "grant_type": "password",
                "client_secret": CLIENT_SECRET,
                "username": USERNAME,
                "password": "wrong",
            },
            "invalid_grant",
            "authentication failure",
        ),
        (
            {
                "grant_type": "password",
                "client_secret": "nope",
                "username": USERNAME,
                "password": PASSWORD,
            },
            "invalid_client",
            "invalid client credentials",
        ),
        ({"grant_type": "magic"}, "unsupported_grant_type", "grant type not supported"),
        (
            {"grant_type": "refresh_token", "refresh_token": "stale"},
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b"},
            "invalid_grant",
            "invalid assertion",
        ),
    ],
)
async def test_grant_errors(
    salesforce_sandbox: SalesforceSandbox, params: dict[str, str], error: str, description: str
) -> None:
    response = await _token(salesforce_sandbox, client_id=CLIENT_ID, **params)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


async def test_unknown_client_id(salesforce_sandbox: SalesforceSandbox) -> None:
    response = await _token(
        salesforce_sandbox, grant_type="client_credentials", client_id="who", client_secret="x"
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client_id",
        "error_description": "client identifier invalid",
    }


async def test_jwt_for_unknown_user_is_refused(salesforce_sandbox: SalesforceSandbox) -> None:
    assertion = _jwt({"iss": CLIENT_ID, "sub": "ghost@x", "exp": int(time.time()) + 60})
    response = await _token(
        salesforce_sandbox,
        grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
        assertion=assertion,
    )
    assert response.json()["error"] == "invalid_grant"


async def test_identity_and_userinfo(salesforce_sandbox: SalesforceSandbox, sf_token: str) -> None:
    headers = {"Authorization": f"Bearer {sf_token}"}
    org = salesforce_sandbox.org
    async with httpx.AsyncClient(base_url=salesforce_sandbox.base_url, timeout=10) as client:
        identity = await client.get(f"/id/{org.org_id}/{org.admin.id}", headers=headers)
        info = await client.get("/services/oauth2/userinfo", headers=headers)
        anonymous = await client.get("/services/oauth2/userinfo")
    assert identity.status_code == 200
    assert identity.json()["email"] == "admin@sandbox.example"
    assert identity.json()["user_id"] == org.admin.id
    assert info.json()["preferred_username"] == USERNAME
    assert anonymous.status_code == 401


async def test_revoked_and_expired_sessions_get_invalid_session_id(
    salesforce_sandbox: SalesforceSandbox, sf_http: httpx.AsyncClient, sf_token: str
) -> None:
    assert (await sf_http.get(f"{API}/sobjects/")).status_code == 200
    revoke = await sf_http.post("/services/oauth2/revoke", data={"token": sf_token})
    assert revoke.status_code == 200
    refused = await sf_http.get(f"{API}/sobjects/")
    assert refused.status_code == 401
    assert refused.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    fresh = await _token(
        salesforce_sandbox,
        grant_type="refresh_token",
        client_id=CLIENT_ID,
        refresh_token="sandbox-refresh-token",
    )
    headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert (await sf_http.get(f"{API}/sobjects/", headers=headers)).status_code == 200
    fault = await sf_http.post("/__sandbox/faults", json={"kind": "expire_sessions"})
    assert fault.status_code == 200
    expired = await sf_http.get(f"{API}/sobjects/", headers=headers)
    assert expired.status_code == 401
    assert expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
