"""HTTP side of OAuth: authorize (login page), token, revoke, identity URL and userinfo."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from sfamp_sandbox.salesforce.api_error import not_found
from sfamp_sandbox.salesforce.authorize_routes import add_authorize_routes
from sfamp_sandbox.salesforce.oauth import (
    OAuthError,
    identity_body,
    oauth_json,
    token_response,
    userinfo_body,
)
from sfamp_sandbox.salesforce.state import STATE, json_response, session_of

MAX_FORM_BYTES = 64 * 1024


def base_url(request: web.Request) -> str:
    """The sandbox as this client reaches it; becomes ``instance_url``."""
    return f"{request.scheme}://{request.host}"


async def _params(request: web.Request) -> dict[str, str]:
    """Token parameters from the form body and/or the query string (both are accepted)."""
    params = dict(request.query)
    if request.content_type == "application/x-www-form-urlencoded" and request.can_read_body:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "request too large")
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        session = state.sessions.grant(await _params(request), _basic_auth(request))
    except OAuthError as exc:
        return oauth_json({"error": exc.error, "error_description": exc.description}, 400)
    return oauth_json(token_response(session, base_url(request), state.sessions))


async def revoke(request: web.Request) -> web.Response:
    state = request.app[STATE]
    params = await _params(request)
    if not state.sessions.revoke(params.get("token", "")):
        return oauth_json({"error": "invalid_token", "error_description": "invalid token"}, 400)
    return web.Response(status=200)


async def identity(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = session_of(request)
    if request.match_info["org_id"][:15] != state.org.org_id[:15]:
        raise not_found()
    if request.match_info["user_id"][:15] != session.user.id[:15]:
        raise not_found()
    return json_response(identity_body(session, base_url(request), state.org, "62.0"))


async def userinfo(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(userinfo_body(session_of(request), base_url(request), state.org))


def add_auth_routes(app: web.Application) -> None:
    router = app.router
    add_authorize_routes(app)
    router.add_post("/services/oauth2/token", token)
    router.add_post("/services/oauth2/revoke", revoke)
    router.add_get("/id/{org_id}/{user_id}", identity)
    router.add_get("/services/oauth2/userinfo", userinfo)
    router.add_post("/services/oauth2/userinfo", userinfo)
