"""Run the Amplitude sandbox: in-process for tests, or until interrupted for the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from sfamp_sandbox.addresses import http_url
from sfamp_sandbox.amplitude.control import Control
from sfamp_sandbox.amplitude.identify import IdentifyLimits
from sfamp_sandbox.amplitude.ingest import CLIENT_MAX_SIZE, Ingestion
from sfamp_sandbox.amplitude.state import SandboxState
from sfamp_sandbox.collector import collected_every
from sfamp_sandbox.disconnects import client_gone
from sfamp_sandbox.latency import latency_middleware, parse_latency_ms

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
# Bounds how long a held ("timeout" fault) request can delay a stop.
SHUTDOWN_TIMEOUT_SECONDS = 5.0


def build_app(
    state: SandboxState, limits: IdentifyLimits, closing: asyncio.Event
) -> web.Application:
    delay = latency_middleware(state.latency, is_control)
    app = web.Application(middlewares=[client_gone, delay], client_max_size=CLIENT_MAX_SIZE)
    Ingestion(state, limits, closing).register(app)
    Control(state).register(app)
    return app


def is_control(path: str) -> bool:
    """The control API (US and EU), which the simulated latency never delays."""
    return path.startswith(("/__sandbox", "/eu/__sandbox"))


class AmplitudeSandbox:
    """The Amplitude emulator on ``host:port`` (port 0 picks a free one).

    ``async with AmplitudeSandbox() as sandbox:`` serves until the block ends;
    ``sandbox.base_url`` is the US root (EU under ``sandbox.base_url + "/eu"``)
    and ``sandbox.state`` gives tests direct access to groups, requests, faults.
    ``latency_ms`` adds a simulated round trip to every API request.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        limits: IdentifyLimits | None = None,
        state: SandboxState | None = None,
        latency_ms: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.state = state or SandboxState()
        if latency_ms:
            self.state.latency.ms = parse_latency_ms(latency_ms)
        self.limits = limits or IdentifyLimits()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def eu_base_url(self) -> str:
        return f"{self.base_url}/eu"

    async def start(self) -> None:
        self._closing.clear()
        app = build_app(self.state, self.limits, self._closing)
        # A long query string must reach the handler so it can answer 414 itself.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=65536,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            # A taken port: release the runner so the caller can report it and exit cleanly.
            await self.stop()
            raise
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AmplitudeSandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ready: Callable[[str], None] | None = None,
    latency_ms: int = 0,
) -> None:
    """Serve the sandbox until cancelled (``sfamp sandbox amplitude``); ``ready`` gets its URL.

    Collections run on a timer while it serves (see :mod:`sfamp_sandbox.collector`).
    """
    async with collected_every(), AmplitudeSandbox(host, port, latency_ms=latency_ms) as sandbox:
        if ready is not None:
            ready(sandbox.base_url)
        await asyncio.Event().wait()
