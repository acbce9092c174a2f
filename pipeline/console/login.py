"""Sign-in with ``SFAMP_CONSOLE__TOKEN`` (only when a token is set).

Failed sign-ins are limited per client address (:mod:`pipeline.console.sign_in_limit`):
past the limit, an attempt is answered 429 with ``Retry-After`` before the token is
looked at, so a right guess then is refused like a wrong one.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from pipeline.console.context import console_of, form_fields, render
from pipeline.console.security import local_path, set_session_cookie
from pipeline.console.sign_in_limit import client_key

log = structlog.get_logger(__name__)


async def login_page(request: web.Request) -> web.Response:
    if not console_of(request).sessions.needs_sign_in:
        raise web.HTTPSeeOther("/")
    return render(request, "login.html", next=local_path(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.Response:
    console = console_of(request)
    sessions = console.sessions
    if not sessions.needs_sign_in:
        raise web.HTTPSeeOther("/")
    fields = await form_fields(request)
    target = local_path(fields.get("next"))
    limiter, address = console.sign_ins, request.remote
    wait = limiter.retry_after(address)
    if wait:
        return _throttled(request, target, wait)
    if not sessions.token_ok(fields.get("token")):
        wait = limiter.failed(address)
        if wait:  # once per address and window: the attempts refused after it are not logged
            log.warning(
                "console_sign_in_throttled",
                address=address,
                counted_as=client_key(address),
                failures=limiter.max_failures,
                window_s=limiter.window,
                retry_after_s=wait,
            )
        return render(
            request, "login.html", status=403, next=target, error="That is not the console token."
        )
    limiter.succeeded(address)
    _, cookie = sessions.issue("in")  # a new session id: nothing from before sign-in carries over
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, cookie, secure=request.secure)
    raise response


def _throttled(request: web.Request, target: str, wait: int) -> web.Response:
    error = f"Too many failed sign-ins from this address; try again in {wait} s."
    response = render(request, "login.html", status=429, next=target, error=error)
    response.headers["Retry-After"] = str(wait)
    return response


def register(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
