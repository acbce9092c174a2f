"""``/services/oauth2/authorize``: the login page of the web server flow (reference §1).

``GET`` checks the request and shows a login form (plain HTML, no scripts) that carries the
request's parameters along; ``POST`` checks them again with the username and password and
redirects to the callback URL with ``code`` and ``state``. A request Salesforce would refuse
goes back to the callback URL with ``error`` and ``error_description``, except when the client
id or the callback URL is wrong: then the error is only shown on the page, as nothing tells
where it would be safe to send it.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from aiohttp import web

from sfamp_sandbox.salesforce.oauth_code import (
    AuthorizationRequest,
    AuthorizeError,
    check_authorization,
    code_redirect,
    error_redirect,
)
from sfamp_sandbox.salesforce.state import STATE

AUTHORIZE_PATH = "/services/oauth2/authorize"
MAX_FORM_BYTES = 64 * 1024
# Carried from the authorize URL through the login form; nothing else is.
CARRIED = ("response_type", "client_id", "redirect_uri", "state", "scope")
CARRIED_PKCE = ("code_challenge", "code_challenge_method")
BAD_LOGIN = (
    "Please check your username and password. If you still can't log in, contact your "
    "Salesforce administrator."
)
HEADERS = {
    # No script runs here; the form posts back to this page, which then redirects anywhere
    # the connected app allows, so no form-action limit.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Login | Salesforce sandbox</title>
<style>
body {{ font-family: sans-serif; max-width: 24rem; margin: 3rem auto; }}
label, input, button {{ display: block; width: 100%; margin: 0.3rem 0; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<main>
<h1>Salesforce sandbox</h1>
{body}
</main>
</body>
</html>
"""
FORM = """<p>Log in to allow <strong>{client_id}</strong> to access the sandbox org.
The sandbox's user is <code>{user}</code>.</p>
{error}
<form method="post" action="{action}">
{hidden}
<label for="username">Username</label>
<input id="username" name="username" type="email" autocomplete="username"
 value="{username}" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log In</button>
</form>
"""


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=PAGE.format(body=body),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=HEADERS,
    )


def _error_page(error: AuthorizeError) -> web.Response:
    body = (
        f'<p class="error" role="alert">error={escape(error.error)}: '
        f"{escape(error.description)}</p>"
    )
    return _page(body, 400)


def _login_page(
    params: Mapping[str, str], username: str, user: str, message: str | None = None
) -> web.Response:
    hidden = "\n".join(
        f'<input type="hidden" name="{name}" value="{escape(params[name])}">'
        for name in (*CARRIED, *CARRIED_PKCE)
        if name in params
    )
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    body = FORM.format(
        client_id=escape(params.get("client_id", "")),
        user=escape(user),
        error=error,
        action=AUTHORIZE_PATH,
        hidden=hidden,
        username=escape(username),
    )
    return _page(body)


async def _form(request: web.Request) -> dict[str, str]:
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _checked(request: web.Request, params: Mapping[str, str]) -> AuthorizationRequest:
    state = request.app[STATE]
    credentials = state.sessions.credentials
    return check_authorization(params, credentials.client_id, credentials.callback_urls)


async def authorize_page(request: web.Request) -> web.Response:
    params = dict(request.query)
    try:
        _checked(request, params)
    except AuthorizeError as error:
        if error.redirect:
            raise web.HTTPFound(error_redirect(params, error)) from None
        return _error_page(error)
    admin = request.app[STATE].org.admin.username
    return _login_page(params, params.get("login_hint", ""), admin)


async def authorize_login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    params = await _form(request)
    try:
        authorization = _checked(request, params)
    except AuthorizeError as error:
        if error.redirect:
            raise web.HTTPFound(error_redirect(params, error)) from None
        return _error_page(error)
    username = params.get("username", "")
    user = state.org.user_by_name(username)
    if user is None or params.get("password") != state.sessions.credentials.password:
        return _login_page(params, username, state.org.admin.username, BAD_LOGIN)
    code = state.sessions.codes.issue(authorization, user)
    raise web.HTTPFound(code_redirect(authorization, code))


def add_authorize_routes(app: web.Application) -> None:
    app.router.add_get(AUTHORIZE_PATH, authorize_page)
    app.router.add_post(AUTHORIZE_PATH, authorize_login)
