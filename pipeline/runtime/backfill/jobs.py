"""A read's Bulk API 2.0 query jobs: created so that a stop never leaves one without an
id, and deleted once no longer of use (read to the end, or not named by a checkpoint
that a resumed run would read on from).

Salesforce keeps a job and its results until it is deleted or 7 days have passed, and
allows 10,000 query jobs a day (Bulk API 2.0 limits).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog

from pipeline.errors import SalesforceRequestError, SfampError
from pipeline.runtime.tasks import seen_through
from pipeline.salesforce.bulk import BulkQuery, JobInfo

# How long a stopping run waits for the delete of a Bulk job no checkpoint names, and
# for the answer to a create it stopped during.
STOPPING_DELETE_SECONDS: Final = 5.0

log = structlog.get_logger(__name__)


async def create_job(bulk: BulkQuery, soql: str, *, all_rows: bool = False) -> JobInfo:
    """:meth:`BulkQuery.create`, seen through when the run stops meanwhile.

    A stop that lands while the create request is on its way would leave the job
    Salesforce then creates with no id to delete it by. So the request goes on: once
    it is answered (within :data:`STOPPING_DELETE_SECONDS`), the job is aborted and
    deleted, and the stop goes on (``CancelledError``). Raises what the create raises.
    """
    creating = asyncio.ensure_future(bulk.create(soql, all_rows=all_rows))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        await seen_through(_forget_created(bulk, creating))
        raise


async def _forget_created(bulk: BulkQuery, creating: asyncio.Future[JobInfo]) -> None:
    try:
        created = await asyncio.wait_for(creating, STOPPING_DELETE_SECONDS)
    except Exception as exc:  # noqa: BLE001 - refused or unanswered: no job to delete
        log.warning("bulk_job_create_failed_at_stop", reason=repr(exc))
    else:
        await forget_unsaved_job(bulk, created.id, None, running=True)


async def forget_job(bulk: BulkQuery, job_id: str | None) -> None:
    """Delete a finished job's results; failing to is not worth failing the run for.

    A job already gone (404 ``NOT_FOUND``: a run stopped after deleting it, before its
    checkpoint said so) is what was wanted.
    """
    if not job_id:
        return
    try:
        await bulk.delete(job_id)
    except SalesforceRequestError as exc:
        if exc.error_code == "NOT_FOUND":
            log.debug("bulk_job_already_deleted", job_id=job_id)
        else:
            log.warning("bulk_job_delete_failed", job_id=job_id, reason=str(exc))
    except SfampError as exc:
        log.warning("bulk_job_delete_failed", job_id=job_id, reason=str(exc))


async def forget_unsaved_job(
    bulk: BulkQuery, job_id: str | None, saved: str | None, *, running: bool = False
) -> None:
    """Delete ``job_id`` unless it is ``saved`` (the checkpoint's, which a resumed run
    reads on), for a run that stops or fails, or an object done; one maybe ``running``
    is aborted first (only a finished or aborted job can be deleted). Best effort, at
    most :data:`STOPPING_DELETE_SECONDS` (Salesforce drops terminal jobs after 7 days),
    and seen through a stop that lands meanwhile, which then goes on.
    """
    if job_id and job_id != saved:
        try:
            # Seen through a second stop, which would leave the job in the org.
            await seen_through(
                asyncio.wait_for(_abandon(bulk, job_id, running), STOPPING_DELETE_SECONDS)
            )
        except Exception as exc:  # noqa: BLE001 - never in the way of the stop or the error
            log.warning("bulk_job_delete_failed", job_id=job_id, reason=repr(exc))


async def _abandon(bulk: BulkQuery, job_id: str, running: bool) -> None:
    if running:
        with contextlib.suppress(SfampError):  # e.g. it has finished meanwhile
            await bulk.abort(job_id)
    await forget_job(bulk, job_id)
