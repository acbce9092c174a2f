"""Sign-in with ``SFAMP_CONSOLE__TOKEN`` (only when a token is set)."""

from __future__ import annotations

from aiohttp import web

from pipeline.console.context import console_of, form_fields, render
from pipeline.console.security import local_path, set_session_cookie


async def login_page(request: web.Request) -> web.Response:
    if not console_of(request).sessions.needs_sign_in:
        raise web.HTTPSeeOther("/")
    return render(request, "login.html", next=local_path(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.Response:
    sessions = console_of(request).sessions
    if not sessions.needs_sign_in:
        raise web.HTTPSeeOther("/")
    fields = await form_fields(request)
    target = local_path(fields.get("next"))
    if not sessions.token_ok(fields.get("token")):
        return render(
            request, "login.html", status=403, next=target, error="That is not the console token."
        )
    _, cookie = sessions.issue("in")  # a new session id: nothing from before sign-in carries over
    response = web.HTTPSeeOther(target)
    set_session_cookie(response, cookie)
    raise response


def register(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
