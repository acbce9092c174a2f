"""A run stopped while a Bulk job's create request is on its way deletes the job
Salesforce created, rather than leaving it with no id to delete it by; a second stop
while a stopped run deletes its job does not cut the delete short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from pipeline.runtime.backfill.jobs import create_job, forget_unsaved_job
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes
from tests.support.events import ended, happened

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


async def stopped_while_held(transport: AnswerHeld, task: asyncio.Task[Any], what: str) -> None:
    """``task`` cancelled while ``transport`` holds its answer (Salesforce has acted), the
    answer released after the cancellation; ``task`` must end cancelled."""
    await happened(transport.held, what, WAIT_SECONDS)
    task.cancel()
    transport.release.set()
    with pytest.raises(asyncio.CancelledError):
        await ended(task, f"the run stopped while {what}", WAIT_SECONDS)


SOQL = "SELECT Id FROM Account"


async def created(bulk: BulkQuery) -> None:
    await create_job(bulk, SOQL)


async def forgotten(bulk: BulkQuery) -> None:
    """A stopped run's delete of a job no checkpoint names."""
    job = await bulk.create(SOQL)
    await forget_unsaved_job(bulk, job.id, None, running=True)


@pytest.mark.parametrize(
    ("method", "ending", "stopped"),
    [
        # The stop lands while the create's answer is on its way.
        ("POST", "/jobs/query", created),
        # A second stop lands while a stopped run aborts the job (the delete follows).
        ("PATCH", "", forgotten),
    ],
    ids=["during-the-create", "during-the-delete"],
)
async def test_a_stop_while_salesforce_answers_leaves_no_job_behind(
    sandboxes: Sandboxes,
    method: str,
    ending: str,
    stopped: Callable[[BulkQuery], Coroutine[Any, Any, None]],
) -> None:
    transport = AnswerHeld(method, ending)
    settings = sandboxes.settings()
    async with SalesforceClient.from_settings(settings.salesforce, transport=transport) as sf:
        task = asyncio.create_task(stopped(BulkQuery(sf.rest)))
        await stopped_while_held(transport, task, f"the answer to the {method} held")

    assert not sandboxes.salesforce.state.jobs.jobs, "the stop left the job behind"
