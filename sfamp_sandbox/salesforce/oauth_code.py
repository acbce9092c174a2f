"""The web server flow's authorization codes, with PKCE (reference §1; RFC 6749 §4.1, RFC 7636).

``GET /services/oauth2/authorize`` checks the request (:func:`check_authorization`); after the
login, :class:`AuthorizationCodes` issues a code bound to the client, the callback URL, the
user and the S256 code challenge. The token endpoint redeems it once, within 15 minutes (the
sandbox clock, so ``/__sandbox/clock`` can age it), with the same ``redirect_uri`` and a
``code_verifier`` whose SHA-256 matches the challenge.

The sandbox's connected app accepts as callback URL any loopback
``http://127.0.0.1:<port>/oauth/callback`` (also ``localhost`` and ``[::1]``): that is where
``sfamp console`` receives the code, on whatever port it runs. ``Credentials.callback_urls``
adds exact URLs for other hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from yarl import URL

from sfamp_sandbox.salesforce.org import User

CODE_LIFETIME_SECONDS = 15 * 60  # Salesforce: a code is good for 15 minutes, once
MAX_CODES = 1_000
CALLBACK_PATH = "/oauth/callback"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_SCOPE = "api refresh_token"
REFRESH_SCOPES = frozenset({"refresh_token", "offline_access", "full"})
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of 32 bytes, no padding


class AuthorizeError(Exception):
    """An authorization request Salesforce refuses.

    ``redirect`` says whether the error goes back to the callback URL (as ``error`` and
    ``error_description`` query parameters) or only on the page, because the client or the
    callback URL itself cannot be trusted.
    """

    def __init__(self, error: str, description: str, *, redirect: bool) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str | None
    code_challenge: str | None
    scope: str


@dataclass(slots=True)
class AuthorizationCode:
    request: AuthorizationRequest
    user: User
    issued: float
    spent: bool = False


def callback_allowed(uri: str, registered: Iterable[str]) -> bool:
    """Whether the connected app lists ``uri`` as a callback URL (see the module docstring)."""
    if uri in registered:
        return True
    try:
        url = URL(uri)
    except ValueError:
        return False
    return (
        url.scheme == "http"
        and url.host in LOOPBACK_HOSTS
        and url.path == CALLBACK_PATH
        and not url.query_string
        and not url.fragment
        and not url.user
    )


def check_authorization(
    params: Mapping[str, str], client_id: str, registered: Iterable[str]
) -> AuthorizationRequest:
    """The authorize request in ``params``, or :class:`AuthorizeError` as Salesforce words it."""
    if params.get("client_id") != client_id:
        raise AuthorizeError("invalid_client_id", "client identifier invalid", redirect=False)
    redirect_uri = params.get("redirect_uri", "")
    if not callback_allowed(redirect_uri, registered):
        raise AuthorizeError(
            "redirect_uri_mismatch", "redirect_uri must match configuration", redirect=False
        )
    if params.get("response_type") != "code":
        raise AuthorizeError(
            "unsupported_response_type", "response type not supported", redirect=True
        )
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method", "S256")
    if challenge is not None and (method != "S256" or not _CHALLENGE.match(challenge)):
        raise AuthorizeError("invalid_request", "invalid code_challenge", redirect=True)
    return AuthorizationRequest(
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=params.get("state"),
        code_challenge=challenge,
        scope=" ".join(params.get("scope", "").split()) or DEFAULT_SCOPE,
    )


def error_redirect(request_params: Mapping[str, str], error: AuthorizeError) -> str:
    """The callback URL carrying ``error``, ``error_description`` and the client's ``state``."""
    query = {"error": error.error, "error_description": error.description}
    state = request_params.get("state")
    if state is not None:
        query["state"] = state
    return str(URL(request_params["redirect_uri"]).update_query(query))


def code_redirect(request: AuthorizationRequest, code: str) -> str:
    query = {"code": code}
    if request.state is not None:
        query["state"] = request.state
    return str(URL(request.redirect_uri).update_query(query))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class CodeError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class AuthorizationCodes:
    """Issued codes, bounded; each redeemable once before it expires."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._codes: OrderedDict[str, AuthorizationCode] = OrderedDict()

    def issue(self, request: AuthorizationRequest, user: User) -> str:
        now = self.clock()
        while self._codes and (
            len(self._codes) >= MAX_CODES
            or next(iter(self._codes.values())).issued < now - CODE_LIFETIME_SECONDS
        ):
            self._codes.popitem(last=False)
        code = f"aPrx{secrets.token_urlsafe(40)}"
        self._codes[code] = AuthorizationCode(request, user, now)
        return code

    def redeem(self, params: Mapping[str, str], client_id: str) -> AuthorizationCode:
        """The code named in a token request; spent by this call whatever its outcome."""
        entry = self._codes.get(params.get("code", ""))
        if entry is None or entry.request.client_id != client_id:
            raise CodeError("invalid_grant", "invalid authorization code")
        if entry.spent or entry.issued < self.clock() - CODE_LIFETIME_SECONDS:
            raise CodeError("invalid_grant", "expired authorization code")
        entry.spent = True
        if params.get("redirect_uri") != entry.request.redirect_uri:
            raise CodeError("redirect_uri_mismatch", "redirect_uri must match configuration")
        challenge = entry.request.code_challenge
        if challenge is not None:
            verifier = params.get("code_verifier", "")
            if not verifier or not hmac.compare_digest(s256(verifier), challenge):
                raise CodeError("invalid_grant", "invalid code verifier")
        return entry


def grants_refresh_token(scope: str) -> bool:
    """Salesforce issues a refresh token only for the refresh_token (or full) scope."""
    return not REFRESH_SCOPES.isdisjoint(scope.split())
