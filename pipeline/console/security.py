"""Who may use the console and what its pages may do: sessions, sign-in, CSRF, headers.

- Bound to a loopback address and without a token, whoever reaches the port is
  the operator: the first request gets a signed-in session cookie.
- With ``SFAMP_CONSOLE__TOKEN`` set, a session is signed in only by ``POST
  /login`` with the token (compared in constant time); every page but the
  sign-in page and the static files needs it.
- Every POST also needs the session's CSRF token (a hidden form field, or the
  ``X-CSRF-Token`` header that console.js copies from a meta tag for htmx),
  so another site cannot make a signed-in browser change anything, and an
  ``Origin``, when the browser sends one, must be the console itself.
- Without a token, only requests addressed to a loopback name (``Host``) are
  answered: a site whose name an attacker points at 127.0.0.1 (DNS rebinding)
  would otherwise be the console's own origin, with its session and CSRF token.

Sessions are stateless: the cookie is ``<id>.<state>.<signature>``, signed with
a key made fresh for each process (a restart signs everyone out). The CSRF token
is a signature of the session id with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import yarl
from aiohttp import web

COOKIE: Final = "sfamp_console"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
SESSION: Final = web.RequestKey("session", str)
CSRF: Final = web.RequestKey("csrf", str)
PUBLIC_PREFIXES: Final = ("/static/",)
LOGIN_PATH: Final = "/login"
# Secrets shorter than this are not searched for in rendered text: they collide with
# ordinary words (the sandbox's password is "sandbox"). The pages never read secret
# settings in the first place; redaction only guards against one leaking by accident.
MIN_REDACTED_LENGTH: Final = 8

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chromium send Origin: null
}

State = Literal["in", "anon"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    state: State


class Sessions:
    """Signs and checks session cookies and CSRF tokens; ``token`` None means no sign-in."""

    def __init__(self, token: str | None, key: bytes | None = None) -> None:
        self.token = token
        self._key = key or secrets.token_bytes(32)

    @property
    def needs_sign_in(self) -> bool:
        return self.token is not None

    def issue(self, state: State) -> tuple[Session, str]:
        session = Session(secrets.token_urlsafe(18), state)
        return session, f"{session.id}.{state}.{self._sign(f'{session.id}.{state}')}"

    def read(self, cookie: str | None) -> Session | None:
        parts = (cookie or "").split(".")
        if len(parts) != 3 or parts[1] not in ("in", "anon"):
            return None
        sid, state, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{sid}.{state}")):
            return None
        return Session(sid, "in" if state == "in" else "anon")

    def csrf(self, session: Session) -> str:
        return self._sign(f"csrf:{session.id}")

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(session))

    def token_ok(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def set_session_cookie(response: web.StreamResponse, value: str, *, secure: bool) -> None:
    # Lax, not Strict: Salesforce's redirect back to /oauth/callback is a cross-site
    # navigation that must arrive signed in. A cross-site POST still carries no cookie,
    # and every POST needs the CSRF token besides. Secure whenever the browser came over
    # HTTPS (directly or through a trusted proxy), so the cookie never travels in clear.
    response.set_cookie(COOKIE, value, httponly=True, samesite="Lax", path="/", secure=secure)


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses, the only ones served without a token."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this console, else ``/``: never another site.

    Browsers drop tabs and line breaks from URLs and read a backslash as a slash, so a
    tab after the first slash would turn a path into another site's address: paths with
    whitespace, control characters or backslashes are refused.
    """
    if not value or not value.startswith("/") or any(c.isspace() or c < " " for c in value):
        return "/"
    if "\\" in value or value.startswith("//"):
        return "/"
    url = yarl.URL(value)
    return value if not url.scheme and not url.host else "/"


def forbidden(reason: str) -> web.HTTPForbidden:
    """A 403 with one line of text that console.js shows in the page's notice area."""
    return web.HTTPForbidden(text=f"forbidden: {reason}\n")


def headers_middleware() -> web.middleware:  # type: ignore[valid-type]
    """The security headers on every response, errors included."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(HEADERS)
            raise
        response.headers.update(HEADERS)
        if response.content_type == "text/html":
            response.headers["Cache-Control"] = "no-store"
        return response

    return middleware


def origin_middleware(sessions: Sessions) -> web.middleware:  # type: ignore[valid-type]
    """Refuse requests for another host name (without a token) and cross-origin POSTs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = yarl.URL(f"http://{request.host}").host or ""
        if not sessions.needs_sign_in and not is_loopback(host):
            raise forbidden(
                f"this console answers only to localhost without SFAMP_CONSOLE__TOKEN "
                f"(the request was for {host or 'no host'})"
            )
        origin = request.headers.get("Origin")
        # "null" (a privacy-minded browser, a sandboxed frame) says nothing: the CSRF token decides.
        if (
            request.method == "POST"
            and origin not in (None, "null")
            and (_authority(origin) != request.host.lower())
        ):
            raise forbidden(f"a request from {origin} cannot change this console")
        return await handler(request)

    return middleware


def _authority(origin: str) -> str:
    url = yarl.URL(origin)
    if url.host is None:
        return ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if not url.is_default_port() else host


def session_middleware(sessions: Sessions) -> web.middleware:  # type: ignore[valid-type]
    """Sign-in (when a token is set) and the CSRF check of every POST."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        session = sessions.read(request.cookies.get(COOKIE))
        issued: str | None = None
        if session is None or (session.state == "anon" and not sessions.needs_sign_in):
            session, issued = sessions.issue("anon" if sessions.needs_sign_in else "in")
        if session.state != "in" and request.path != LOGIN_PATH:
            if request.method == "POST":
                raise forbidden("sign in first at /login (SFAMP_CONSOLE__TOKEN)")
            raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={request.path_qs}")
        if request.method == "POST" and not sessions.csrf_ok(session, await _given_csrf(request)):
            raise forbidden("missing or wrong CSRF token; reload the page and try again")
        request[SESSION] = session.id
        request[CSRF] = sessions.csrf(session)
        response = await handler(request)
        if issued is not None and COOKIE not in response.cookies:
            set_session_cookie(response, issued, secure=request.secure)
        return response

    return middleware


async def _given_csrf(request: web.Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def redactor(secret_values: Iterable[str]) -> Callable[[object], object]:
    """A Jinja ``finalize``: every rendered value with a configured secret in it is masked."""
    values = sorted(
        {v for v in secret_values if len(v) >= MIN_REDACTED_LENGTH}, key=len, reverse=True
    )

    def finalize(value: object) -> object:
        if value is None:
            return ""
        if isinstance(value, str):
            for secret in values:
                if secret in value:
                    value = value.replace(secret, "***")
        return value

    return finalize
