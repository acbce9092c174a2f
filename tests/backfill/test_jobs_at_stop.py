"""A run stopped while a Bulk job's create request is on its way deletes the job
Salesforce created, rather than leaving it with no id to delete it by; a second stop
while a stopped run deletes its job does not cut the delete short."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from pipeline.runtime.backfill.jobs import create_job, forget_unsaved_job
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes

WAIT_SECONDS = 30.0


class AnswerHeld(httpx.AsyncBaseTransport):
    """Real HTTP; the answer to the first ``method`` request on a Bulk job path ending in
    ``ending`` waits (after Salesforce acted on it) until ``release`` is set, at most
    ``WAIT_SECONDS``."""

    def __init__(self, method: str, ending: str) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self._method, self._ending = method, ending
        self.held, self.release = asyncio.Event(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._http.handle_async_request(request)
        path = request.url.path
        if (
            request.method == self._method
            and path.endswith(self._ending)
            and not self.held.is_set()
        ):
            self.held.set()
            # Not wait_for: it would end a cancelled wait whose event was just set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_SECONDS):
                    await self.release.wait()
        return response

    async def aclose(self) -> None:
        await self._http.aclose()


async def test_a_stop_while_a_jobs_create_is_on_its_way_deletes_the_job(
    sandboxes: Sandboxes,
) -> None:
    transport = AnswerHeld("POST", "/jobs/query")
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        creating = asyncio.create_task(create_job(BulkQuery(sf.rest), "SELECT Id FROM Account"))
        await asyncio.wait_for(transport.held.wait(), WAIT_SECONDS)
        assert sandboxes.salesforce.state.jobs.jobs, "the sandbox did not create the job"
        # The stop lands while the answer is on its way; the answer comes after it.
        creating.cancel()
        transport.release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(creating, WAIT_SECONDS)

    assert not sandboxes.salesforce.state.jobs.jobs, "the stopped create left its job behind"


async def test_a_second_stop_while_a_stopped_run_deletes_its_job_does_not_cut_it_short(
    sandboxes: Sandboxes,
) -> None:
    # The job's abort is held: the delete that follows it is what a cut would skip.
    transport = AnswerHeld("PATCH", "")
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        bulk = BulkQuery(sf.rest)
        job = await bulk.create("SELECT Id FROM Account")
        forgetting = asyncio.create_task(forget_unsaved_job(bulk, job.id, None, running=True))
        await asyncio.wait_for(transport.held.wait(), WAIT_SECONDS)
        forgetting.cancel()  # the second stop
        transport.release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(forgetting, WAIT_SECONDS)

    assert not sandboxes.salesforce.state.jobs.jobs, "the second stop left the job behind"
