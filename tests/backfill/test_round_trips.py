"""Round trips a backfill waits for: the calls before the first page are asked together, the
catch-up's first read goes while the last batches are on the wire, and the snapshot's Bulk
job is deleted meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from pipeline.errors import SalesforceRequestError
from pipeline.runtime.backfill import BackfillSummary, LogProgress, ReadOptions, run_backfill
from pipeline.runtime.backfill.jobs import forget_job
from pipeline.runtime.backfill.meaning import MODSTAMP
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes, mapping


class InFlight(httpx.AsyncBaseTransport):
    """Real HTTP, remembering which requests were in flight together."""

    def __init__(self, on_send: Callable[[str], None] | None = None) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._on_send = on_send
        self._now: list[str] = []
        self.most: list[str] = []  # the largest set
        self.together: list[set[str]] = []  # the set in flight as each request left

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = _kind(request)
        if self._on_send is not None:
            self._on_send(name)
        self._now.append(name)
        self.together.append(set(self._now))
        if len(self._now) > len(self.most):
            self.most = sorted(self._now)
        try:
            return await self._http.handle_async_request(request)
        finally:
            self._now.remove(name)

    async def aclose(self) -> None:
        await self._http.aclose()


def _kind(request: httpx.Request) -> str:
    soql = request.url.params.get("q", "")
    if "COUNT()" in soql:
        return "count"
    if f"{MODSTAMP} >=" in soql:
        return "catch-up round"
    if request.method == "DELETE" and "/jobs/query/" in request.url.path:
        return "job delete"
    return request.url.path.rsplit("/data/", 1)[-1]


class SlowOnceReading(LogProgress):
    """Once the snapshot's first batch is read, Salesforce answers after a second."""

    def __init__(self, sandboxes: Sandboxes) -> None:
        super().__init__(interval_seconds=3600)
        self._sandboxes = sandboxes

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        super().start_object(sfdc_object, total, method, done=done)
        self._sandboxes.salesforce.state.latency.ms = 1000


async def backfilled(
    sandboxes: Sandboxes, tmp_path: Path, transport: InFlight, **options: Any
) -> BackfillSummary:
    """A backfill of 300 Accounts whose Salesforce requests go through ``transport``."""
    await sandboxes.seed("Account", 300)
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        return await run_backfill(
            settings, mapping(), checkpoint_path=tmp_path / "checkpoint.json", salesforce=sf,
            **options,
        )  # fmt: skip


async def test_the_describe_the_clock_and_the_count_are_asked_together(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    transport = InFlight()
    summary = await backfilled(sandboxes, tmp_path, transport)

    assert summary.completed, summary.error
    assert summary.total("rows_read") == 300
    # Salesforce's clock (for the catch-up) is the Date of a GET of the versions list.
    version = sandboxes.settings().salesforce.api_version
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


async def test_the_snapshot_job_is_deleted_while_the_catch_up_reads(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    transport = InFlight()
    summary = await backfilled(
        sandboxes, tmp_path, transport,
        options=ReadOptions(api="bulk"), progress=SlowOnceReading(sandboxes),
    )  # fmt: skip

    assert summary.completed, summary.error
    assert summary.bulk_jobs == 1
    assert not sandboxes.salesforce.state.jobs.jobs
    # Each takes a second: the delete left while the catch-up's read waited for its answer.
    together = [names for names in transport.together if len(names) > 1]
    assert {"job delete", "catch-up round"} in together, transport.together


async def test_a_job_already_deleted_is_not_a_failure(sandboxes: Sandboxes) -> None:
    async with SalesforceClient.from_settings(sandboxes.settings().salesforce) as sf:
        bulk = BulkQuery(sf.rest)
        job = await bulk.create("SELECT Id FROM Account")
        await bulk.delete(job.id)
        with capture_logs() as logs:
            await forget_job(bulk, job.id)  # a resumed run, stopped after deleting it

    assert not [entry for entry in logs if entry["log_level"] == "warning"], logs
    assert [entry["event"] for entry in logs] == ["bulk_job_already_deleted"]


async def test_the_catch_up_reads_while_the_last_batch_is_on_its_way(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    sandboxes.amplitude.state.latency.ms = 1000  # the one batch lands a second after it left
    groups = sandboxes.amplitude.state.store("us").groups
    landed_when_read: list[int] = []

    def sent(name: str) -> None:
        if name == "catch-up round":
            landed_when_read.append(len(groups))

    summary = await backfilled(sandboxes, tmp_path, InFlight(sent))

    assert summary.completed, summary.error
    assert summary.objects[0].catch_up_rounds == 1
    assert len(groups) == 300
    assert landed_when_read == [0], "the catch-up read only once the snapshot had landed"
