"""The aiohttp application of the Salesforce sandbox: every route on one state."""

from __future__ import annotations

from email.utils import formatdate

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sfamp_sandbox.disconnects import client_gone
from sfamp_sandbox.latency import latency_middleware
from sfamp_sandbox.salesforce.auth_routes import add_auth_routes
from sfamp_sandbox.salesforce.bulk import add_bulk_routes
from sfamp_sandbox.salesforce.clock import SandboxClock
from sfamp_sandbox.salesforce.cometd import add_cometd_routes
from sfamp_sandbox.salesforce.control import add_control_routes, control_errors
from sfamp_sandbox.salesforce.rest import add_rest_routes, api_middleware
from sfamp_sandbox.salesforce.state import STATE, SandboxState

# Collections retrieve takes up to 2,000 ids in a POST body; seed calls can be larger still.
CLIENT_MAX_SIZE = 8 * 1024 * 1024


def build_app(
    state: SandboxState, *, poll_timeout: float = 110.0, client_timeout: float = 40.0
) -> web.Application:
    delay = latency_middleware(state.latency, is_control)
    app = web.Application(
        middlewares=[client_gone, org_date(state.clock), delay, control_errors, api_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[STATE] = state
    add_auth_routes(app)
    add_rest_routes(app)
    add_bulk_routes(app)
    add_control_routes(app)
    state.cometd = add_cometd_routes(
        app,
        state.events,
        authorize=state.sessions.authorize,
        clock=state.clock.now,
        poll_timeout=poll_timeout,
        client_timeout=client_timeout,
    )
    return app


def is_control(path: str) -> bool:
    """The control API, which the simulated latency never delays."""
    return path.startswith("/__sandbox")


def org_date(clock: SandboxClock) -> Middleware:
    """Stamp every answer's ``Date`` with the org's clock, as a real org's follows its own.

    Clients measure windows over ``SystemModstamp`` on this header (never the local
    clock), so once ``POST /__sandbox/clock`` moves the org ahead, the header must move
    with it.
    """

    @web.middleware
    async def stamp(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:  # a streamed answer has sent its headers already
            response.headers["Date"] = formatdate(clock.now(), usegmt=True)
        return response

    return stamp
