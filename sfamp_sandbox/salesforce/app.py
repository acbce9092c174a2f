"""The aiohttp application of the Salesforce sandbox: every route on one state."""

from __future__ import annotations

from aiohttp import web

from sfamp_sandbox.disconnects import client_gone
from sfamp_sandbox.latency import latency_middleware
from sfamp_sandbox.salesforce.auth_routes import add_auth_routes
from sfamp_sandbox.salesforce.bulk import add_bulk_routes
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
        middlewares=[client_gone, delay, control_errors, api_middleware],
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
