"""Bulk API 2.0 query jobs: create, poll, page through CSV results, abort, delete.

A backfill reads whole objects, which REST would return 2,000 rows per call;
a Bulk query job returns them in pages of up to ``maxRecords`` rows per call
and does the work on Salesforce's side. Result pages are addressed by an
opaque ``Sforce-Locator``: the same locator returns the same rows for as long
as the job exists (about 7 days), which is what makes a backfill resumable.

Memory stays bounded by one page: each page is parsed lazily, a block of rows at a time
and handed on in batches; nothing holds the whole result. Every call goes
through :meth:`SalesforceRest.request`, so re-login, REQUEST_LIMIT_EXCEEDED
and outages are translated once, there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from pipeline.errors import SalesforceError, SalesforceRequestError, SalesforceUnavailableError
from pipeline.salesforce.bulk_csv import ROWS_AT_ONCE, Convert, csv_blocks, parse_csv
from pipeline.salesforce.rest import SalesforceRest
from pipeline.salesforce.text import read_json

TERMINAL: Final = frozenset(("JobComplete", "Failed", "Aborted"))
DEFAULT_MAX_RECORDS: Final = 50_000
# Rows handed on at a time: small enough that the typed dicts of one batch stay a
# few MB, large enough that per-batch work (a send, a checkpoint) is amortised; one
# full HTTP V2 request (1,999 events) for a mapping of unique groups. Batches of one
# request keep Amplitude busier than batches of two, their requests in flight alike
# (benchmarks/README.md, "Backfill").
DEFAULT_BATCH_ROWS: Final = 1_999
POLL_FIRST_SECONDS: Final = 0.25
POLL_MAX_SECONDS: Final = 30.0
POLL_GROWTH: Final = 1.5
WAIT_DEADLINE_SECONDS: Final = 6 * 3600.0
NO_MORE: Final = "null"  # Sforce-Locator of the last page

Sleep = Callable[[float], Awaitable[None]]
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What Salesforce says about a query job."""

    id: str
    state: str
    object: str
    records_processed: int
    error_message: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> JobInfo:
        job_id = body.get("id")
        if not isinstance(job_id, str):
            raise SalesforceError("Bulk job answer has no 'id'")
        return cls(
            id=job_id,
            state=str(body.get("state") or ""),
            object=str(body.get("object") or ""),
            records_processed=int(body.get("numberRecordsProcessed") or 0),
            error_message=body.get("errorMessage") or None,
        )


@dataclass(frozen=True, slots=True)
class ResultPage:
    """One CSV page of a job; ``locator`` is the one it was fetched with (None: the first)."""

    locator: str | None
    next_locator: str | None
    number_of_records: int
    content: bytes

    def rows(self, converters: Mapping[str, Convert] | None = None) -> Iterator[dict[str, Any]]:
        """The rows as dicts, parsed lazily; see :func:`parse_csv`."""
        return parse_csv(self.content, converters)

    def blocks(
        self, converters: Mapping[str, Convert] | None = None, *, rows: int = ROWS_AT_ONCE
    ) -> Iterator[Sequence[dict[str, Any]]]:
        """The rows up to ``rows`` at a time, parsed lazily; see :func:`csv_blocks`."""
        return csv_blocks(self.content, converters, rows=rows)


class BulkQuery:
    """Bulk API 2.0 query jobs over an authenticated :class:`SalesforceRest`.

    ``jobs_created`` and ``api_calls`` count what this object spent, for the
    backfill summary (the org allows 10,000 query jobs per 24 h).
    """

    def __init__(
        self,
        rest: SalesforceRest,
        *,
        poll_first: float = POLL_FIRST_SECONDS,
        poll_max: float = POLL_MAX_SECONDS,
        wait_deadline: float = WAIT_DEADLINE_SECONDS,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest = rest
        self.jobs_created = 0
        self.api_calls = 0
        self._poll_first = poll_first
        self._poll_max = poll_max
        self._deadline = wait_deadline
        self._sleep = sleep
        self._clock = clock

    async def create(self, soql: str, *, all_rows: bool = False) -> JobInfo:
        """Start a job; ``all_rows`` is ``queryAll`` (recycle-bin rows too)."""
        body = {
            "operation": "queryAll" if all_rows else "query",
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        job = JobInfo.from_json(await self._json("POST", "jobs/query", json=body))
        self.jobs_created += 1
        log.info("bulk_job_created", job_id=job.id, object=job.object)
        return job

    async def info(self, job_id: str) -> JobInfo:
        return JobInfo.from_json(await self._json("GET", f"jobs/query/{job_id}"))

    async def wait(self, job_id: str) -> JobInfo:
        """Poll with growing pauses until the job is terminal; Failed/Aborted raise.

        Raises :class:`SalesforceRequestError` (``BULK_JOB_FAILED`` / ``BULK_JOB_ABORTED``)
        for a job that will never have results, and :class:`SalesforceUnavailableError`
        when it is still running after the wait deadline.
        """
        started = self._clock()
        delay = self._poll_first
        while True:
            job = await self.info(job_id)
            if job.terminal:
                return _completed(job)
            if self._clock() - started > self._deadline:
                raise SalesforceUnavailableError(
                    f"Bulk job {job_id} still {job.state} after {self._deadline:.0f} s"
                )
            await self._sleep(delay)
            delay = min(self._poll_max, delay * POLL_GROWTH)

    async def page(self, job_id: str, locator: str | None, *, max_records: int) -> ResultPage:
        """One result page; the same locator always answers the same rows."""
        params = {"maxRecords": str(max_records)}
        if locator:
            params["locator"] = locator
        self.api_calls += 1
        response = await self.rest.request(
            "GET", f"jobs/query/{job_id}/results", params=params, headers={"Accept": "text/csv"}
        )
        following = response.headers.get("Sforce-Locator") or NO_MORE
        count = response.headers.get("Sforce-NumberOfRecords")
        return ResultPage(
            locator=locator,
            next_locator=None if following == NO_MORE else following,
            number_of_records=int(count) if count and count.isdigit() else -1,
            content=response.content,
        )

    async def pages(
        self,
        job_id: str,
        *,
        locator: str | None = None,
        max_records: int = DEFAULT_MAX_RECORDS,
        first_max_records: int | None = None,
    ) -> AsyncIterator[ResultPage]:
        """Every page from ``locator`` (None: the first) to the last; the first of them
        up to ``first_max_records`` rows when given (so that work on it starts sooner)."""
        size = first_max_records or max_records
        while True:
            page = await self.page(job_id, locator, max_records=size)
            yield page
            if page.next_locator is None:
                return
            locator, size = page.next_locator, max_records

    async def abort(self, job_id: str) -> JobInfo:
        body = await self._json("PATCH", f"jobs/query/{job_id}", json={"state": "Aborted"})
        return JobInfo.from_json(body)

    async def delete(self, job_id: str) -> None:
        """Delete a finished job and its results (they count against daily storage)."""
        self.api_calls += 1
        await self.rest.request("DELETE", f"jobs/query/{job_id}")

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.api_calls += 1
        response = await self.rest.request(method, path, **kwargs)
        try:
            body = read_json(response.content)
        except ValueError as exc:
            raise SalesforceError(f"{method} {path}: Salesforce answered non-JSON") from exc
        if not isinstance(body, dict):
            raise SalesforceError(f"{method} {path}: expected a JSON object")
        return body


def _completed(job: JobInfo) -> JobInfo:
    if job.state == "JobComplete":
        return job
    code = "BULK_JOB_FAILED" if job.state == "Failed" else "BULK_JOB_ABORTED"
    reason = f": {job.error_message}" if job.error_message else ""
    raise SalesforceRequestError(f"Bulk job {job.id} {job.state.lower()}{reason}", error_code=code)


def select_list(fields: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(fields))
