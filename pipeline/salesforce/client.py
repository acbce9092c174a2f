"""One object that owns the HTTP connection pool and the Salesforce adapters built on it.

``async with SalesforceClient.from_settings(settings.salesforce) as sf:`` gives
``sf.auth`` (OAuth, token cache, CometD authenticator) and ``sf.rest`` (REST
calls); leaving the block closes the pool.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Final

import httpx

from pipeline import __version__
from pipeline.config.settings import SalesforceSettings
from pipeline.salesforce.auth import SalesforceAuth
from pipeline.salesforce.rest import DEFAULT_ATTEMPTS, SalesforceRest, Sleep
from pipeline.tls import verified_context

MAX_CONNECT_SECONDS: Final = 10.0
MAX_CONNECTIONS: Final = 20


class SalesforceClient:
    """The Salesforce adapters sharing one ``httpx.AsyncClient``, closed on exit."""

    def __init__(
        self,
        settings: SalesforceSettings,
        http: httpx.AsyncClient,
        auth: SalesforceAuth,
        rest: SalesforceRest,
    ) -> None:
        self.settings = settings
        self.http = http
        self.auth = auth
        self.rest = rest

    @classmethod
    def from_settings(
        cls,
        settings: SalesforceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        sleep: Sleep = asyncio.sleep,
    ) -> SalesforceClient:
        """Build the client; ``transport``, ``max_attempts`` and ``sleep`` exist for tests."""
        timeout = httpx.Timeout(
            settings.timeout_seconds, connect=min(MAX_CONNECT_SECONDS, settings.timeout_seconds)
        )
        http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            headers={"User-Agent": f"sfamp/{__version__}"},
            transport=transport,
            verify=verified_context(),
        )
        auth = SalesforceAuth(settings, http)
        rest = SalesforceRest(
            auth, http, api_version=settings.api_version, max_attempts=max_attempts, sleep=sleep
        )
        return cls(settings, http, auth, rest)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> SalesforceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
