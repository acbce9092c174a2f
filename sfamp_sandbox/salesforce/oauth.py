"""OAuth 2.0 token endpoint, revocation and identity of the sandbox (reference §1).

Grants: password, refresh_token, client_credentials, JWT bearer (the JWT must be well formed,
name the client id as ``iss`` and a known user as ``sub``; its signature is not checked) and
authorization_code, the web server flow with PKCE (:mod:`sfamp_sandbox.salesforce.oauth_code`),
which also issues a refresh token for the refresh_token grant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sfamp_sandbox.salesforce.oauth_code import (
    DEFAULT_SCOPE,
    AuthorizationCodes,
    CodeError,
    grants_refresh_token,
)
from sfamp_sandbox.salesforce.org import Org, User
from sfamp_sandbox.salesforce.values import datetime_rest

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Credentials:
    client_id: str = "sandbox-client"
    # The documented sandbox defaults (DESIGN.md), not secrets.
    client_secret: str = "sandbox-secret"  # noqa: S105
    password: str = "sandbox"  # noqa: S105
    refresh_token: str = "sandbox-refresh-token"  # noqa: S105
    # Callback URLs of the web server flow besides any loopback .../oauth/callback.
    callback_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    user: User
    issued_ms: int
    refresh_token: str | None = None
    scope: str = DEFAULT_SCOPE


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class SessionStore:
    """Issued access tokens; bounded, oldest dropped first (as if it had timed out)."""

    def __init__(self, org: Org, clock: Callable[[], float], credentials: Credentials) -> None:
        self.org = org
        self.clock = clock
        self.credentials = credentials
        self.refresh_token_valid = True
        self.codes = AuthorizationCodes(clock)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._refresh_tokens: OrderedDict[str, User] = OrderedDict()

    def issue(
        self, user: User, *, refresh_token: str | None = None, scope: str = DEFAULT_SCOPE
    ) -> Session:
        token = f"{self.org.org_id[:15]}!{secrets.token_urlsafe(48)}"
        session = Session(token, user, int(self.clock() * 1000), refresh_token, scope)
        self._sessions[token] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def lookup(self, authorization: str | None) -> Session | None:
        """The session of an ``Authorization: Bearer|OAuth <token>`` header, if still valid."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() not in {"bearer", "oauth"}:
            return None
        return self._sessions.get(token.strip())

    def authorize(self, authorization: str | None) -> bool:
        return self.lookup(authorization) is not None

    def revoke(self, token: str) -> bool:
        if token == self.credentials.refresh_token and self.refresh_token_valid:
            self.refresh_token_valid = False
            return True
        if self._refresh_tokens.pop(token, None) is not None:
            return True
        return self._sessions.pop(token, None) is not None

    def expire_all(self) -> int:
        count = len(self._sessions)
        self._sessions.clear()
        return count

    # -- grants -------------------------------------------------------------------------------

    def grant(self, params: Mapping[str, str], basic: tuple[str, str] | None) -> Session:
        grant_type = params.get("grant_type", "")
        handlers = {
            "password": self._password,
            "refresh_token": self._refresh,
            "client_credentials": self._client_credentials,
            JWT_GRANT: self._jwt,
        }
        if grant_type not in handlers and grant_type != "authorization_code":
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        client_id, secret = basic or (params.get("client_id", ""), params.get("client_secret"))
        if grant_type == JWT_GRANT:
            client_id = _jwt_claims(params.get("assertion", "")).get("iss", "")
        if client_id != self.credentials.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if secret is not None and secret != self.credentials.client_secret:
            raise OAuthError("invalid_client", "invalid client credentials")
        if grant_type == "authorization_code":
            return self._code_grant(params, client_id, secret)
        return self.issue(handlers[grant_type](params, secret))

    def _code_grant(self, params: Mapping[str, str], client_id: str, secret: str | None) -> Session:
        try:
            entry = self.codes.redeem(params, client_id)
        except CodeError as exc:
            raise OAuthError(exc.error, exc.description) from exc
        # Like a connected app that does not require the secret for the web server flow once
        # PKCE protects the code; without PKCE the secret is required.
        if secret is None and entry.request.code_challenge is None:
            raise OAuthError("invalid_client", "invalid client credentials")
        refresh_token = None
        if grants_refresh_token(entry.request.scope):
            refresh_token = f"5Aep{secrets.token_urlsafe(64)}"
            self._refresh_tokens[refresh_token] = entry.user
            while len(self._refresh_tokens) > MAX_SESSIONS:
                self._refresh_tokens.popitem(last=False)
        return self.issue(entry.user, refresh_token=refresh_token, scope=entry.request.scope)

    def _password(self, params: Mapping[str, str], secret: str | None) -> User:
        if secret is None:
            raise OAuthError("invalid_client", "invalid client credentials")
        user = self.org.user_by_name(params.get("username", ""))
        if user is None or params.get("password") != self.credentials.password:
            raise OAuthError("invalid_grant", "authentication failure")
        return user

    def _refresh(self, params: Mapping[str, str], secret: str | None) -> User:
        token = params.get("refresh_token", "")
        issued = self._refresh_tokens.get(token)
        if issued is not None:
            return issued
        if token != self.credentials.refresh_token or not self.refresh_token_valid:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        return self.org.admin

    def _client_credentials(self, params: Mapping[str, str], secret: str | None) -> User:
        if secret is None:
            raise OAuthError("invalid_client", "invalid client credentials")
        return self.org.admin  # the connected app's "Run As" user

    def _jwt(self, params: Mapping[str, str], secret: str | None) -> User:
        claims = _jwt_claims(params.get("assertion", ""))
        user = self.org.user_by_name(str(claims.get("sub", "")))
        if user is None:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < self.clock() - 60:
            raise OAuthError("invalid_grant", "expired authorization code")
        return user


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_claims(assertion: str) -> dict[str, Any]:
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("a JWT has three parts")
        header = orjson.loads(_b64url(parts[0]))
        claims = orjson.loads(_b64url(parts[1]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise OAuthError("invalid_grant", "invalid assertion") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
        raise OAuthError("invalid_grant", "invalid assertion")
    return claims


def token_response(session: Session, base_url: str, store: SessionStore) -> dict[str, Any]:
    identity = f"{base_url}/id/{store.org.org_id}/{session.user.id}"
    issued_at = str(session.issued_ms)
    digest = hmac.new(
        store.credentials.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
    ).digest()
    body = {
        "access_token": session.token,
        "instance_url": base_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": base64.b64encode(digest).decode(),
        "scope": session.scope,
    }
    if session.refresh_token is not None:
        body["refresh_token"] = session.refresh_token
    return body


def identity_body(session: Session, base_url: str, org: Org, version: str) -> dict[str, Any]:
    user = session.user
    first, _, last = user.name.partition(" ")
    data = f"{base_url}/services/data/v{version}/"
    return {
        "id": f"{base_url}/id/{org.org_id}/{user.id}",
        "asserted_user": True,
        "user_id": user.id,
        "organization_id": org.org_id,
        "username": user.username,
        "nick_name": user.username.split("@")[0],
        "display_name": user.name,
        "email": user.email,
        "email_verified": True,
        "first_name": first,
        "last_name": last,
        "timezone": "GMT",
        "active": True,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": datetime_rest(session.issued_ms),
        "is_app_installed": True,
        "urls": {
            "rest": data,
            "sobjects": f"{data}sobjects/",
            "query": f"{data}query/",
            "limits": f"{data}limits/",
            "profile": f"{base_url}/{user.id}",
        },
    }


def userinfo_body(session: Session, base_url: str, org: Org) -> dict[str, Any]:
    user = session.user
    first, _, last = user.name.partition(" ")
    return {
        "sub": f"{base_url}/id/{org.org_id}/{user.id}",
        "user_id": user.id,
        "organization_id": org.org_id,
        "preferred_username": user.username,
        "nickname": user.username.split("@")[0],
        "name": user.name,
        "email": user.email,
        "email_verified": True,
        "given_name": first,
        "family_name": last,
        "zoneinfo": "GMT",
        "active": True,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
    }


def oauth_json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="UTF-8"
    )
