"""OAuth 2.0 login to Salesforce: password, refresh token, client credentials and JWT bearer.

Salesforce tokens carry no lifetime (no ``expires_in``): a token is good until an
API call answers 401 ``INVALID_SESSION_ID``. So the token is cached and replaced
only on demand, through :meth:`SalesforceAuth.refresh`, which is single-flight:
when many tasks see the same stale token at once, one logs in and the others
reuse its answer.

CometD (``aiosfstream-ng``) logs in through its own authenticators, which know
only login.salesforce.com; :meth:`SalesforceAuth.streaming_authenticator` gives it
one that goes through this class instead, so the configured login URL (or the
sandbox) and every auth flow work for streaming too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import structlog

from pipeline.config.settings import SalesforceSettings
from pipeline.errors import (
    SalesforceAuthError,
    SalesforceError,
    SalesforceUnavailableError,
    SettingsError,
)
from pipeline.http_failures import describe_transport_failure

if TYPE_CHECKING:
    from aiosfstream_ng.auth import AuthenticatorBase

TOKEN_PATH: Final = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret
JWT_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce wants a short-lived assertion; it rejects far-off expiry times.
JWT_LIFETIME_SECONDS: Final = 180
MAX_ERROR_TEXT: Final = 200

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SalesforceToken:
    """One access token and where to use it (``instance_url``, never the login host)."""

    access_token: str
    instance_url: str
    identity_url: str | None
    issued_at_ms: int

    def __repr__(self) -> str:
        # Keeps the token out of tracebacks and debug output.
        return f"SalesforceToken(instance_url={self.instance_url!r}, issued={self.issued_at_ms})"


class SalesforceAuth:
    """Logs in with ``settings.auth_flow`` at ``settings.login_url`` + ``/services/oauth2/token``.

    OAuth refusals raise :class:`SalesforceAuthError` with Salesforce's
    ``error_description``; connection problems and 5xx raise
    :class:`SalesforceUnavailableError`. Missing credentials raise
    :class:`SettingsError` before any request is made.
    """

    def __init__(
        self,
        settings: SalesforceSettings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.logins = 0
        self._http = http
        self._clock = clock
        self._token: SalesforceToken | None = None
        self._lock = asyncio.Lock()

    @property
    def token_url(self) -> str:
        return self.settings.login_url + TOKEN_PATH

    @property
    def current(self) -> SalesforceToken | None:
        """The cached token, if any; no login."""
        return self._token

    async def token(self) -> SalesforceToken:
        """The cached token; logs in on first use."""
        if self._token is not None:
            return self._token
        async with self._lock:
            if self._token is None:
                self._token = await self._login()
            return self._token

    async def refresh(self, stale: SalesforceToken | None = None) -> SalesforceToken:
        """Log in again, unless another task already replaced ``stale``; then return that.

        Without ``stale`` the login always happens.
        """
        async with self._lock:
            current = self._token
            if stale is not None and current is not None and current != stale:
                return current
            self._token = None  # a failed login must not leave the stale token in use
            self._token = await self._login()
            return self._token

    def streaming_authenticator(self) -> AuthenticatorBase:
        """An aiosfstream authenticator that logs in through this object (for CdcSubscriber)."""
        # Imported here: aiosfstream, and aiohttp under it, load only where streaming is
        # used (not in `sfamp backfill`, for one).
        from pipeline.salesforce.cdc import StreamingAuthenticator

        return StreamingAuthenticator(self)

    async def _login(self) -> SalesforceToken:
        flow = self.settings.auth_flow
        problems = self.settings.credential_problems()
        if problems:
            raise SettingsError(problems)
        form = self._form()
        try:
            response = await self._http.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.TimeoutException as exc:
            raise SalesforceUnavailableError(
                f"Salesforce login at {self.token_url} timed out "
                f"({describe_transport_failure(exc)})"
            ) from exc
        except httpx.TransportError as exc:
            raise SalesforceUnavailableError(
                f"cannot reach Salesforce login at {self.token_url}: "
                f"{describe_transport_failure(exc)}"
            ) from exc
        token = self._parse(response)
        self.logins += 1
        log.info("salesforce_login", flow=flow, instance_url=token.instance_url)
        return token

    def _form(self) -> dict[str, str]:
        s = self.settings
        secret = s.client_secret.get_secret_value() if s.client_secret else None
        if s.auth_flow == "password":
            password = _secret(s.password) + _secret(s.security_token)
            form = {"grant_type": "password", "username": s.username or "", "password": password}
        elif s.auth_flow == "refresh_token":
            form = {"grant_type": "refresh_token", "refresh_token": _secret(s.refresh_token)}
        elif s.auth_flow == "client_credentials":
            form = {"grant_type": "client_credentials"}
        else:
            return {"grant_type": JWT_GRANT, "assertion": self.jwt_assertion()}
        form["client_id"] = s.client_id
        if secret:
            form["client_secret"] = secret
        return form

    def jwt_assertion(self) -> str:
        """The RS256-signed JWT of the bearer flow (``iss`` client id, ``sub`` username)."""
        s = self.settings
        key_file = s.jwt_private_key_file
        if key_file is None:
            raise SalesforceAuthError(
                "the jwt flow needs a private key: set SFAMP_SALESFORCE__JWT_PRIVATE_KEY_FILE"
            )
        claims = {
            "iss": s.client_id,
            "sub": s.username,
            "aud": s.jwt_audience or s.login_url,
            "exp": int(self._clock()) + JWT_LIFETIME_SECONDS,
        }
        key = _read_key(key_file)
        import jwt  # PyJWT and cryptography load only for this flow

        try:
            return jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise SalesforceAuthError(
                f"cannot sign the JWT with {key_file}: not an RSA private key in PEM form"
            ) from exc

    def _parse(self, response: httpx.Response) -> SalesforceToken:
        flow = self.settings.auth_flow
        if response.status_code >= 500:
            raise SalesforceUnavailableError(
                f"Salesforce login answered {response.status_code}; try again later"
            )
        body = _json_object(response)
        if response.status_code != 200:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            description = str(body.get("error_description") or response.text[:MAX_ERROR_TEXT])
            checked = self.settings.credential_variables()
            if error in _CONNECTED_APP_ERRORS:  # the app's keys, not the user's
                checked = [name for name in checked if name.endswith(_CONNECTED_APP_ERRORS[error])]
            raise SalesforceAuthError(
                f"Salesforce refused the {flow} login at {self.token_url}: "
                f"{description.strip()} ({error}); check {', '.join(checked)}",
                error_code=error,
            )
        access_token, instance_url = body.get("access_token"), body.get("instance_url")
        if not isinstance(access_token, str) or not isinstance(instance_url, str):
            raise SalesforceError("Salesforce login answer lacks access_token or instance_url")
        identity = body.get("id")
        return SalesforceToken(
            access_token=access_token,
            instance_url=instance_url.rstrip("/"),
            identity_url=identity if isinstance(identity, str) else None,
            issued_at_ms=_issued_at(body.get("issued_at"), self._clock),
        )


# OAuth token errors that name the connected app's keys rather than the user's
# credentials ("client identifier invalid", "invalid client credentials": Salesforce
# Help, "OAuth 2.0 Username-Password Flow", error codes), and the settings holding them.
_CONNECTED_APP_ERRORS: Final = {
    "invalid_client_id": ("__CLIENT_ID",),
    "invalid_client": ("__CLIENT_ID", "__CLIENT_SECRET"),
}


def _secret(value: Any) -> str:
    return str(value.get_secret_value()) if value is not None else ""


def _read_key(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        reason = (exc.strerror or "unreadable").lower()
        raise SalesforceAuthError(f"cannot read the JWT private key file {path}: {reason}") from exc
    except UnicodeDecodeError as exc:
        raise SalesforceAuthError(
            f"cannot read the JWT private key file {path}: not text (a PEM file is)"
        ) from exc


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _issued_at(value: Any, clock: Callable[[], float]) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(clock() * 1000)
