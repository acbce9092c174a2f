"""OAuth flows against the Salesforce sandbox over real HTTP, and how refusals read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.config.settings import SalesforceSettings
from pipeline.errors import SalesforceAuthError, SalesforceUnavailableError, SettingsError
from pipeline.salesforce.auth import SalesforceAuth
from pipeline.salesforce.client import SalesforceClient
from sfamp_sandbox.salesforce import SalesforceSandbox
from tests.salesforce.helpers import (
    CLIENT_SECRET,
    PASSWORD,
    REFRESH_TOKEN,
    USERNAME,
    Sleeps,
    fault,
    sandbox_settings,
)
from tests.support.ports import closed_port_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "server.key"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def login(settings: SalesforceSettings) -> tuple[SalesforceAuth, str]:
    """Log in, then prove the token works with a REST call; returns the auth and the user's
    email."""
    async with SalesforceClient.from_settings(settings) as client:
        token = await client.auth.token()
        assert token.access_token
        info = await client.rest.userinfo()
        return client.auth, str(info["email"])


FLOWS: dict[str, dict[str, Any]] = {
    "password": {},
    "refresh_token": {
        "auth_flow": "refresh_token",
        "refresh_token": REFRESH_TOKEN,
        "username": None,
        "password": None,
    },
    "client_credentials": {"auth_flow": "client_credentials", "username": None, "password": None},
}


@pytest.mark.parametrize("flow", sorted(FLOWS))
async def test_each_secret_flow_logs_in(salesforce_sandbox: SalesforceSandbox, flow: str) -> None:
    settings = sandbox_settings(salesforce_sandbox, **FLOWS[flow])
    auth, email = await login(settings)
    token = auth.current
    assert token is not None
    assert token.instance_url == salesforce_sandbox.base_url
    assert token.identity_url is not None
    assert token.identity_url.startswith(f"{salesforce_sandbox.base_url}/id/")
    assert token.issued_at_ms > 0
    assert "@" in email
    assert auth.logins == 1


async def test_jwt_bearer_flow_signs_with_the_key_file(
    salesforce_sandbox: SalesforceSandbox, key_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = sandbox_settings(
        salesforce_sandbox,
        auth_flow="jwt",
        client_secret=None,
        password=None,
        jwt_private_key_file=key_file,
    )
    auth, email = await login(settings)
    assert auth.logins == 1
    assert email

    async with httpx.AsyncClient() as http:
        assertion = SalesforceAuth(settings, http).jwt_assertion()
    claims = jwt.decode(
        assertion,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience=salesforce_sandbox.base_url,
    )
    assert claims["iss"] == "sandbox-client"
    assert claims["sub"] == USERNAME
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"


async def test_jwt_with_a_file_that_is_not_a_key(
    salesforce_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello")
    settings = sandbox_settings(
        salesforce_sandbox, auth_flow="jwt", client_secret=None, jwt_private_key_file=bad
    )
    with pytest.raises(SalesforceAuthError, match="not an RSA private key"):
        await login(settings)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.pem", None, "no such file or directory"),
        ("binary.pem", b"\xff\xfe\x00key", "not text (a PEM file is)"),
    ],
)
async def test_jwt_key_file_that_cannot_be_read_says_why(
    salesforce_sandbox: SalesforceSandbox,
    tmp_path: Path,
    name: str,
    content: bytes | None,
    reason: str,
) -> None:
    key_file = tmp_path / name
    if content is not None:
        key_file.write_bytes(content)
    settings = sandbox_settings(
        salesforce_sandbox, auth_flow="jwt", client_secret=None, jwt_private_key_file=key_file
    )
    with pytest.raises(SalesforceAuthError) as refused:
        await login(settings)
    assert str(refused.value) == f"cannot read the JWT private key file {key_file}: {reason}"


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"password": "wrong-password"}, "authentication failure (invalid_grant)"),
    ({"client_id": "someone-else"}, "client identifier invalid (invalid_client_id)"),
    ({"client_secret": "wrong-secret"}, "invalid client credentials (invalid_client)"),
    (
        {"auth_flow": "refresh_token", "refresh_token": "not-the-token"},
        "expired access/refresh token (invalid_grant)",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), REFUSALS)
async def test_refused_logins_read_as_one_line(
    salesforce_sandbox: SalesforceSandbox, overrides: dict[str, Any], expected: str
) -> None:
    settings = sandbox_settings(salesforce_sandbox, **overrides)
    with pytest.raises(SalesforceAuthError) as caught:
        await login(settings)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert caught.value.error_code == expected.rsplit("(", 1)[1].rstrip(")")
    for secret in ("wrong-password", PASSWORD, CLIENT_SECRET, "not-the-token"):
        assert secret not in message


@pytest.mark.parametrize(
    ("overrides", "checked"),
    [
        ({"client_id": "someone-else"}, "CLIENT_ID"),
        ({"client_secret": "wrong-secret"}, "CLIENT_ID, SFAMP_SALESFORCE__CLIENT_SECRET"),
        (
            {"password": "wrong-password"},
            "CLIENT_ID, SFAMP_SALESFORCE__CLIENT_SECRET, SFAMP_SALESFORCE__USERNAME, "
            "SFAMP_SALESFORCE__PASSWORD, SFAMP_SALESFORCE__SECURITY_TOKEN",
        ),
    ],
)
async def test_a_refusal_names_the_settings_it_is_about(
    salesforce_sandbox: SalesforceSandbox, overrides: dict[str, Any], checked: str
) -> None:
    """A connected app's key refused is not the user's password: the hint says which."""
    with pytest.raises(SalesforceAuthError) as caught:
        await login(sandbox_settings(salesforce_sandbox, **overrides))
    assert str(caught.value).endswith(f"; check SFAMP_SALESFORCE__{checked}")


async def test_jwt_for_an_unknown_user_is_refused(
    salesforce_sandbox: SalesforceSandbox, key_file: Path
) -> None:
    settings = sandbox_settings(
        salesforce_sandbox,
        auth_flow="jwt",
        client_secret=None,
        username="nobody@sandbox.example",
        jwt_private_key_file=key_file,
    )
    with pytest.raises(SalesforceAuthError, match="user hasn't approved this consumer"):
        await login(settings)


async def test_missing_credentials_are_named_before_any_request(
    salesforce_sandbox: SalesforceSandbox,
) -> None:
    settings = sandbox_settings(salesforce_sandbox, password=None, client_secret=None)
    with pytest.raises(SettingsError) as caught:
        await login(settings)
    names = {problem.path for problem in caught.value.problems}
    assert names == {"SFAMP_SALESFORCE__PASSWORD", "SFAMP_SALESFORCE__CLIENT_SECRET"}


async def test_unreachable_login_host_is_unavailable() -> None:
    login_url = closed_port_url()
    settings = SalesforceSettings(
        login_url=login_url,
        client_id="x",
        client_secret="y",
        username="u",
        password="p",
        timeout_seconds=2,
    )
    async with SalesforceClient.from_settings(settings, sleep=Sleeps()) as client:
        with pytest.raises(SalesforceUnavailableError) as caught:
            await client.auth.token()
        # The reason in words, on one line, not the httpx class (ConnectError).
        assert str(caught.value) == (
            f"cannot reach Salesforce login at {login_url}/services/oauth2/token: "
            "connection refused"
        )
        with pytest.raises(SalesforceUnavailableError):
            await client.rest.limits()  # retried, then given up


async def test_concurrent_refreshes_log_in_once(sf_client: SalesforceClient) -> None:
    stale = await sf_client.auth.token()
    fresh = await asyncio.gather(*(sf_client.auth.refresh(stale) for _ in range(5)))
    assert sf_client.auth.logins == 2
    assert len({token.access_token for token in fresh}) == 1
    assert fresh[0] != stale
    forced = await sf_client.auth.refresh()
    assert forced != fresh[0]
    assert sf_client.auth.logins == 3


async def test_expired_sessions_are_renewed_transparently(
    sf_client: SalesforceClient, control: httpx.AsyncClient
) -> None:
    await sf_client.rest.limits()
    first = sf_client.auth.current
    await fault(control, "expire_sessions")
    limits = await sf_client.rest.limits()
    assert "DailyApiRequests" in limits
    assert sf_client.auth.logins == 2
    assert sf_client.auth.current != first


async def test_revoked_token_is_renewed_transparently(
    sf_client: SalesforceClient, salesforce_sandbox: SalesforceSandbox
) -> None:
    token = await sf_client.auth.token()
    async with httpx.AsyncClient() as http:
        revoked = await http.post(
            f"{salesforce_sandbox.base_url}/services/oauth2/revoke",
            data={"token": token.access_token},
        )
    assert revoked.status_code == 200
    info = await sf_client.rest.userinfo()
    assert info["preferred_username"] == USERNAME
    assert sf_client.auth.logins == 2


async def test_revoked_refresh_token_fails_the_next_login(
    salesforce_sandbox: SalesforceSandbox, control: httpx.AsyncClient
) -> None:
    settings = sandbox_settings(salesforce_sandbox, **FLOWS["refresh_token"])
    async with SalesforceClient.from_settings(settings) as client:
        await client.rest.limits()
        async with httpx.AsyncClient() as http:
            await http.post(
                f"{salesforce_sandbox.base_url}/services/oauth2/revoke",
                data={"token": REFRESH_TOKEN},
            )
        await fault(control, "expire_sessions")
        with pytest.raises(SalesforceAuthError, match="expired access/refresh token"):
            await client.rest.limits()
