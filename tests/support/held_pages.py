"""Real HTTP to Salesforce where Bulk result pages wait for another object's job."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

# How long a held result page waits at most: far longer than opening an object takes,
# so only a run that never opens the next object ahead waits this long.
HOLD_SECONDS = 30.0


class HeldPages(httpx.AsyncBaseTransport):
    """No Bulk result page is answered before a job of ``sfdc_object`` was created (or
    ``HOLD_SECONDS`` passed); ``seen`` lists both in the order they happened."""

    def __init__(self, sfdc_object: str) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._query = f"FROM {sfdc_object}".encode()
        self._created = asyncio.Event()
        self.created = f"{sfdc_object} job created"
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/results"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._created.wait(), HOLD_SECONDS)
            self.seen.append("result page")
        response = await self._http.handle_async_request(request)
        created = request.method == "POST" and path.endswith("/jobs/query")
        if created and self._query in request.content:
            self.seen.append(self.created)
            self._created.set()
        return response

    async def aclose(self) -> None:
        await self._http.aclose()
