"""Run the Salesforce sandbox: in-process for tests, or until cancelled for the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from sfamp_sandbox.addresses import http_url
from sfamp_sandbox.collector import collected_every
from sfamp_sandbox.latency import Latency
from sfamp_sandbox.salesforce.app import build_app
from sfamp_sandbox.salesforce.bulk import BulkJobs
from sfamp_sandbox.salesforce.cdc import ChangeEventLog
from sfamp_sandbox.salesforce.clock import SandboxClock
from sfamp_sandbox.salesforce.oauth import Credentials, SessionStore
from sfamp_sandbox.salesforce.org import Org
from sfamp_sandbox.salesforce.rest_query import QueryCursors
from sfamp_sandbox.salesforce.state import ApiUsage, SandboxState

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8410
API_VERSION = "62.0"
# Bounds how long held CometD long-polls or "slow" faults can delay a stop.
SHUTDOWN_TIMEOUT_SECONDS = 5.0


class SalesforceSandbox:
    """The Salesforce emulator on ``host:port`` (port 0 picks a free one).

    ``async with SalesforceSandbox() as sf:`` serves until the block ends. ``sf.base_url`` is
    both the login host and the ``instance_url``; ``sf.org`` holds the records, ``sf.events``
    the CDC change log, ``sf.clock`` the emulator clock, ``sf.state`` everything else.

    Options: ``bulk_job_seconds`` (how long a Bulk query job takes to complete, 0.2 s),
    ``api_max`` (daily API allocation, 15,000), ``retention_seconds`` and ``max_events`` of
    the change log, ``poll_timeout`` and ``client_timeout`` of CometD, ``credentials``, and
    ``latency_ms``, a simulated round trip added to every API request (0).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        bulk_job_seconds: float = 0.2,
        api_max: int = 15_000,
        retention_seconds: float = 259_200.0,
        max_events: int = 2_000_000,
        poll_timeout: float = 110.0,
        client_timeout: float = 40.0,
        credentials: Credentials | None = None,
        latency_ms: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.clock = SandboxClock()
        self.events = ChangeEventLog(
            self.clock.now, retention_seconds=retention_seconds, max_events=max_events
        )
        self.org = Org(self.clock.now, self.events.publish)
        self.state = SandboxState(
            clock=self.clock,
            org=self.org,
            events=self.events,
            sessions=SessionStore(self.org, self.clock.now, credentials or Credentials()),
            cursors=QueryCursors(),
            jobs=BulkJobs(job_seconds=bulk_job_seconds),
            usage=ApiUsage(max=api_max),
            latency=Latency(latency_ms),
        )
        self._poll_timeout = poll_timeout
        self._client_timeout = client_timeout
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/services/oauth2/token"

    async def start(self) -> SalesforceSandbox:
        app = build_app(
            self.state, poll_timeout=self._poll_timeout, client_timeout=self._client_timeout
        )
        self._runner = web.AppRunner(
            app, access_log=None, max_line_size=65536, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
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
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SalesforceSandbox:
        return await self.start()

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
    """Serve the sandbox until cancelled (``sfamp sandbox salesforce``); ``ready`` gets its URL.

    Collections run on a timer while it serves (see :mod:`sfamp_sandbox.collector`).
    """
    async with collected_every(), SalesforceSandbox(host, port, latency_ms=latency_ms) as sandbox:
        if ready is not None:
            ready(sandbox.base_url)
        await asyncio.Event().wait()
