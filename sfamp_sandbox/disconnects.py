"""Clients that go away in the middle of a request (a command stopped with Ctrl-C, a
flush cancelled while it uploads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 400 when the client closed its connection before its body arrived.

    aiohttp would log a handler's ``ConnectionResetError`` as an error with its whole
    traceback, as if the sandbox had failed; nobody reads this answer.
    """
    try:
        return await handler(request)
    except ConnectionResetError:
        raise web.HTTPBadRequest(
            text="the client closed the connection before its request was read"
        ) from None
