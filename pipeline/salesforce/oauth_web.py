"""The OAuth 2.0 web server flow with PKCE: how an operator obtains a refresh token.

The operator's browser goes to Salesforce's authorize endpoint with a code challenge (S256 of
a random code verifier) and a random state; after the login, Salesforce sends the browser back
to the callback URL with a one-time code and the same state. The code, the verifier and the
same callback URL buy an access token and a refresh token at the token endpoint. The refresh
token is what ``SFAMP_SALESFORCE__REFRESH_TOKEN`` then holds for the refresh_token flow.

PKCE binds the code to whoever holds the verifier, so an intercepted code is useless; the
state binds the callback to the browser that started the flow (the caller checks it).

Pure helpers (verifier, challenge, state, the authorize URL) and two calls over httpx
(:func:`exchange_code`, :func:`connected_username`). Failures are one line from the error
tree; no message quotes the client secret, the code or a token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx
import structlog

from pipeline.config.settings import ENV_PREFIX, SalesforceSettings
from pipeline.errors import (
    Problem,
    SalesforceAuthError,
    SalesforceError,
    SalesforceUnavailableError,
    SettingsError,
)
from pipeline.http_failures import describe_transport_failure
from pipeline.salesforce.auth import TOKEN_PATH, SalesforceToken

AUTHORIZE_PATH: Final = "/services/oauth2/authorize"
USERINFO_PATH: Final = "/services/oauth2/userinfo"
# api: REST, Bulk and streaming; refresh_token: the token sfamp keeps (Salesforce issues one
# only when the scope asks for it).
SCOPE: Final = "api refresh_token"
VERIFIER_BYTES: Final = 64  # 86 characters; RFC 7636 wants 43 to 128
STATE_BYTES: Final = 32
MAX_ERROR_TEXT: Final = 200
CLIENT_ID_SETTING: Final = f"{ENV_PREFIX}SALESFORCE__CLIENT_ID"
SECRET_SETTING: Final = f"{ENV_PREFIX}SALESFORCE__CLIENT_SECRET"
# What to do about the refusals an operator can fix.
HINTS: Final = {
    "invalid_grant": "the code was used, expired or does not match this sign-in; start again",
    "redirect_uri_mismatch": "add the callback URL to the connected app's Callback URLs",
    "invalid_client_id": f"check {CLIENT_ID_SETTING} (the connected app's consumer key)",
    "invalid_client": f"check {SECRET_SETTING}, or let the connected app use PKCE without "
    "the secret (turn off Require Secret for Web Server Flow)",
}

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WebLogin:
    """What the code bought: a session, and the refresh token to store."""

    token: SalesforceToken
    refresh_token: str
    scope: str

    def __repr__(self) -> str:
        # Keeps both tokens out of tracebacks and debug output.
        return f"WebLogin(instance_url={self.token.instance_url!r}, scope={self.scope!r})"


def make_code_verifier() -> str:
    """A fresh PKCE code verifier (unreserved characters only)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: base64url of its SHA-256, without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def make_state() -> str:
    """A fresh, unguessable ``state`` for one sign-in."""
    return secrets.token_urlsafe(STATE_BYTES)


def require_client_id(settings: SalesforceSettings) -> str:
    if not settings.client_id:
        raise SettingsError(
            [Problem(CLIENT_ID_SETTING, "required to connect: the connected app's consumer key")]
        )
    return settings.client_id


def authorize_url(
    settings: SalesforceSettings,
    *,
    redirect_uri: str,
    state: str,
    challenge: str,
    scope: str = SCOPE,
) -> str:
    """Where to send the browser: the login host's authorize endpoint with every parameter."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": require_client_id(settings),
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{settings.login_url}{AUTHORIZE_PATH}?{query}"


def refusal(error: str, description: str | None) -> SalesforceAuthError:
    """The one-line error for a refusal, from the token endpoint or the callback's query."""
    text = " ".join((description or error).split())[:MAX_ERROR_TEXT]
    hint = HINTS.get(error)
    message = f"Salesforce refused the sign-in: {text} ({error})"
    return SalesforceAuthError(f"{message}; {hint}" if hint else message, error_code=error)


async def exchange_code(
    settings: SalesforceSettings,
    http: httpx.AsyncClient,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
) -> WebLogin:
    """Trade the code for tokens at the token endpoint (``grant_type=authorization_code``).

    The client secret goes along when it is set; with PKCE a connected app may not need it.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": require_client_id(settings),
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    if settings.client_secret is not None:
        form["client_secret"] = settings.client_secret.get_secret_value()
    token_url = settings.login_url + TOKEN_PATH
    response = await _send(http, "POST", token_url, data=form)
    login = _parse(response)
    log.info("salesforce_web_login", instance_url=login.token.instance_url, scope=login.scope)
    return login


async def connected_username(http: httpx.AsyncClient, token: SalesforceToken) -> str:
    """The username (or email) of the user who signed in, from the userinfo endpoint."""
    url = token.instance_url + USERINFO_PATH
    headers = {"Authorization": f"Bearer {token.access_token}"}
    response = await _send(http, "GET", url, headers=headers)
    body = _json_object(response)
    name = body.get("preferred_username") or body.get("email")
    if response.status_code != 200 or not isinstance(name, str):
        raise SalesforceError(f"Salesforce userinfo answered {response.status_code}")
    return name


async def _send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
    try:
        response = await http.request(method, url, headers=headers, **kwargs)
    except httpx.TimeoutException as exc:
        raise SalesforceUnavailableError(
            f"Salesforce at {url} timed out ({describe_transport_failure(exc)})"
        ) from exc
    except httpx.TransportError as exc:
        raise SalesforceUnavailableError(
            f"cannot reach Salesforce at {url}: {describe_transport_failure(exc)}"
        ) from exc
    if response.status_code >= 500:
        raise SalesforceUnavailableError(
            f"Salesforce answered {response.status_code} at {url}; try again later"
        )
    return response


def _parse(response: httpx.Response) -> WebLogin:
    body = _json_object(response)
    if response.status_code != 200:
        error = str(body.get("error") or f"HTTP {response.status_code}")
        description = body.get("error_description")
        raise refusal(error, str(description) if description else None)
    access_token, instance_url = body.get("access_token"), body.get("instance_url")
    if not isinstance(access_token, str) or not isinstance(instance_url, str):
        raise SalesforceError("Salesforce's token answer lacks access_token or instance_url")
    refresh_token = body.get("refresh_token")
    scope = str(body.get("scope") or "")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise SalesforceAuthError(
            "Salesforce issued no refresh token: give the connected app the OAuth scope "
            "'Perform requests at any time (refresh_token, offline_access)'"
        )
    identity = body.get("id")
    token = SalesforceToken(
        access_token=access_token,
        instance_url=instance_url.rstrip("/"),
        identity_url=identity if isinstance(identity, str) else None,
        issued_at_ms=_issued_at(body.get("issued_at")),
    )
    return WebLogin(token=token, refresh_token=refresh_token, scope=scope)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _issued_at(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
