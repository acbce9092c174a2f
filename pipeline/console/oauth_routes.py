"""Connect to Salesforce: ``GET /oauth/start`` and ``GET /oauth/callback``.

The OAuth 2.0 web server flow with PKCE (:mod:`pipeline.salesforce.oauth_web`), ending with
the refresh token on a page, once, for the operator to store in their secret store.

- ``/oauth/start`` makes a code verifier and a state, keeps the verifier in this process
  under the state (it never reaches the browser), puts the state in an HttpOnly cookie, and
  redirects to Salesforce's authorize endpoint. The cookie is ``SameSite=Lax``: Salesforce
  sends the browser back with a top-level cross-site navigation, on which a ``Strict``
  cookie would not come along.
- ``/oauth/callback`` accepts an answer only from the browser that started the sign-in (the
  ``state`` in the URL equals its cookie: no other site can make a browser finish a sign-in
  it did not start) and only for a sign-in started here in the last ten minutes. The pending
  sign-in is forgotten before the code is exchanged, so a reload, a second tab or a replayed
  URL finds nothing: the refresh token is shown once and never kept.

The callback URL is this console's own ``/oauth/callback`` as the browser reaches it (scheme
and ``Host``); the connected app must list it (the Salesforce sandbox accepts any loopback
``http://127.0.0.1:<port>/oauth/callback``). A forged ``Host`` gains nothing: Salesforce
sends codes only to listed URLs, and a code is useless without the verifier kept here.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import httpx
import structlog
from aiohttp import web

from pipeline.console.context import console_of, render
from pipeline.errors import SalesforceError, SettingsError, SfampError
from pipeline.salesforce.oauth_web import (
    HINTS,
    WebLogin,
    authorize_url,
    code_challenge,
    connected_username,
    exchange_code,
    make_code_verifier,
    make_state,
    refusal,
)
from pipeline.tls import verified_context

START_PATH: Final = "/oauth/start"
CALLBACK_PATH: Final = "/oauth/callback"
STATE_COOKIE: Final = "sfamp_oauth_state"
SIGN_IN_SECONDS: Final = 600  # time to log in at Salesforce before the sign-in is forgotten
MAX_PENDING: Final = 100
START_AGAIN: Final = "start again with Connect to Salesforce on the Connection page"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    verifier: str
    redirect_uri: str
    started: float


class PendingSignIns:
    """Sign-ins started and not yet finished, by state; bounded, each taken at most once."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, PendingSignIn] = OrderedDict()

    def add(self, state: str, sign_in: PendingSignIn) -> None:
        self._pending[state] = sign_in
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def take(self, state: str, now: float) -> PendingSignIn | None:
        """The sign-in of ``state``, forgotten by this call; None if unknown or too old."""
        sign_in = self._pending.pop(state, None)
        if sign_in is None or now - sign_in.started > SIGN_IN_SECONDS:
            return None
        return sign_in


PENDING: Final = web.AppKey("oauth_pending_sign_ins", PendingSignIns)


def callback_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{CALLBACK_PATH}"


def _failed(
    request: web.Request, message: str, status: int, *, finished: bool = True
) -> web.Response:
    """The one-line reason on a page; ``finished`` forgets this browser's sign-in too."""
    response = render(request, "oauth_failed.html", status=status, message=message)
    if finished:
        response.del_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response


async def start(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    verifier, state = make_code_verifier(), make_state()
    redirect_uri = callback_url(request)
    try:
        url = authorize_url(
            console.settings.salesforce,
            redirect_uri=redirect_uri,
            state=state,
            challenge=code_challenge(verifier),
        )
    except SettingsError as exc:
        problems = "; ".join(str(problem) for problem in exc.problems)
        return _failed(request, f"Cannot connect to Salesforce: {problems}", 400)
    request.app[PENDING].add(state, PendingSignIn(verifier, redirect_uri, console.clock()))
    log.info("console_oauth_started", login_url=console.settings.salesforce.login_url)
    response = web.HTTPSeeOther(url)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=SIGN_IN_SECONDS,
        path=CALLBACK_PATH,
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    raise response


class NoSignIn(Exception):
    """The callback finishes no sign-in of this browser; the message says why."""

    def __init__(self, message: str, *, finished: bool) -> None:
        super().__init__(message)
        self.finished = finished


def _matching_sign_in(request: web.Request) -> PendingSignIn:
    """The pending sign-in this callback finishes, taken from the pending ones."""
    cookie, state = request.cookies.get(STATE_COOKIE), request.query.get("state", "")
    if not cookie:
        raise NoSignIn(
            "No sign-in to Salesforce is in progress in this browser: the refresh token is "
            f"shown only once, right after signing in; {START_AGAIN}.",
            finished=True,
        )
    if not hmac.compare_digest(cookie.encode(), state.encode()):
        # Left in progress: a forged callback must not cancel the operator's sign-in.
        raise NoSignIn(
            "This answer from Salesforce does not belong to the sign-in started in this "
            f"browser (state mismatch); {START_AGAIN}.",
            finished=False,
        )
    sign_in = request.app[PENDING].take(state, console_of(request).clock())
    if sign_in is None:
        raise NoSignIn(
            f"This sign-in is finished or took longer than ten minutes; {START_AGAIN}.",
            finished=True,
        )
    return sign_in


async def _exchange(request: web.Request, sign_in: PendingSignIn, code: str) -> WebLogin:
    settings = console_of(request).settings.salesforce
    async with httpx.AsyncClient(
        timeout=settings.timeout_seconds, verify=verified_context()
    ) as http:
        return await exchange_code(
            settings,
            http,
            code=code,
            redirect_uri=sign_in.redirect_uri,
            code_verifier=sign_in.verifier,
        )


async def _username(request: web.Request, login: WebLogin) -> str | None:
    """Who signed in, to show beside the token; the token is shown even when this fails."""
    settings = console_of(request).settings.salesforce
    try:
        async with httpx.AsyncClient(
            timeout=settings.timeout_seconds, verify=verified_context()
        ) as http:
            return await connected_username(http, login.token)
    except SalesforceError as exc:
        log.warning("console_oauth_userinfo_failed", error=str(exc))
        return None


async def callback(request: web.Request) -> web.StreamResponse:
    try:
        sign_in = _matching_sign_in(request)
    except NoSignIn as exc:
        return _failed(request, str(exc), 400, finished=exc.finished)
    error, code = request.query.get("error"), request.query.get("code")
    if error:
        refused = str(refusal(error, request.query.get("error_description")))
        return _failed(request, refused if error in HINTS else f"{refused}; {START_AGAIN}.", 400)
    if not code:
        return _failed(request, f"Salesforce's answer carries no code; {START_AGAIN}.", 400)
    try:
        login = await _exchange(request, sign_in, code)
    except SfampError as exc:
        return _failed(request, str(exc), 502)
    username = await _username(request, login)
    log.info("console_oauth_connected", instance_url=login.token.instance_url, user=username)
    settings = console_of(request).settings.salesforce
    response = render(
        request,
        "oauth_token.html",
        refresh_token=login.refresh_token,
        username=username,
        instance_url=login.token.instance_url,
        login_url=settings.login_url,
        client_id=settings.client_id,
    )
    response.headers["Cache-Control"] = "no-store"
    response.del_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response


def register(app: web.Application) -> None:
    """Add Connect to Salesforce's two routes (``create_console_app`` calls this)."""
    app[PENDING] = PendingSignIns()
    app.router.add_get(START_PATH, start)
    app.router.add_get(CALLBACK_PATH, callback)
