"""Round trips a backfill waits for: the calls before the first page are asked together."""

from __future__ import annotations

from pathlib import Path

import httpx

from pipeline.errors import SalesforceRequestError
from pipeline.runtime.backfill import run_backfill
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes, mapping


class InFlight(httpx.AsyncBaseTransport):
    """Real HTTP, remembering the largest set of requests that were in flight at once."""

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._now: list[str] = []
        self.most: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        soql = request.url.params.get("q", "")
        name = "count" if "COUNT()" in soql else request.url.path.rsplit("/data/", 1)[-1]
        self._now.append(name)
        if len(self._now) > len(self.most):
            self.most = sorted(self._now)
        try:
            return await self._http.handle_async_request(request)
        finally:
            self._now.remove(name)

    async def aclose(self) -> None:
        await self._http.aclose()


async def test_the_describe_the_clock_and_the_count_are_asked_together(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 300)
    settings = sandboxes.settings()
    transport = InFlight()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        summary = await run_backfill(
            settings, mapping(), checkpoint_path=tmp_path / "checkpoint.json", salesforce=sf
        )

    assert summary.completed, summary.error
    assert summary.total("rows_read") == 300
    # Salesforce's clock (for the catch-up) is the Date of a GET of the versions list.
    version = settings.salesforce.api_version
    expected = sorted(["count", f"{version}/", f"{version}/sobjects/Account/describe/"])
    assert transport.most == expected, transport.most


async def test_an_unknown_object_fails_as_its_describe_does(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    config = mapping()
    unknown = config.mappings[0].model_copy(update={"sfdc_object": "Acount"})
    config = config.model_copy(update={"mappings": [unknown]})
    summary = await run_backfill(
        sandboxes.settings(), config, checkpoint_path=tmp_path / "checkpoint.json"
    )

    assert isinstance(summary.error, SalesforceRequestError), summary.error
    assert "NOT_FOUND" in str(summary.error), summary.error
