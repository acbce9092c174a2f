"""HTTP endpoints of a running service: /healthz, /readyz, /metrics, /status."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.config.settings import RuntimeSettings
from pipeline.errors import ListenError
from pipeline.runtime.listen import check_listen
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.state import ServiceState

WHAT = "health endpoint"
CHANGE = "set SFAMP_RUNTIME__HEALTH_PORT to a free port, or to 0 to turn the endpoint off"
CHANGE_HOST = "set SFAMP_RUNTIME__HEALTH_HOST to an address of this machine (0.0.0.0: all)"


def create_health_app(state: ServiceState, metrics: Metrics) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        alive, problems = state.alive()
        return _json({"alive": alive, "problems": problems}, 200 if alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        ready, waiting = state.ready()
        return _json({"ready": ready, "waiting_for": waiting}, 200 if ready else 503)

    async def status(_: web.Request) -> web.Response:
        return _json(state.to_status(), 200)

    async def metrics_endpoint(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _json(data: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def serve_health(
    state: ServiceState,
    metrics: Metrics,
    host: str,
    port: int,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled; ``started`` is set once the port is bound."""
    runner = web.AppRunner(create_health_app(state, metrics), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:  # taken since check_health_port looked
            raise ListenError(WHAT, host, port, exc, CHANGE, change_host=CHANGE_HOST) from exc
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def check_health_port(settings: RuntimeSettings) -> None:
    """Refuse a taken health port before the service starts anything (``sfamp run``)."""
    if settings.health_port:
        check_listen(
            WHAT, settings.health_host, settings.health_port, CHANGE, change_host=CHANGE_HOST
        )
