"""Bulk API 2.0 query jobs: create, poll, page through CSV results, abort, delete.

A backfill reads whole objects, which REST would return 2,000 rows per call;
a Bulk query job returns them in pages of up to ``maxRecords`` rows per call
and does the work on Salesforce's side. Result pages are addressed by an
opaque ``Sforce-Locator``: the same locator returns the same rows for as long
as the job exists (about 7 days), which is what makes a backfill resumable.

Memory stays bounded by one page: each page is parsed lazily, row by row,
and handed on in batches; nothing holds the whole result. Every call goes
through :meth:`SalesforceRest.request`, so re-login, REQUEST_LIMIT_EXCEEDED
and outages are translated once, there.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from pipeline.errors import SalesforceError, SalesforceRequestError, SalesforceUnavailableError
from pipeline.salesforce.rest import SalesforceRest

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
MEMO_TEXTS: Final = 4096  # conversions remembered per typed column of ROWS_AT_ONCE rows
ROWS_AT_ONCE: Final = 1_000  # rows of a page converted together
_UNSEEN: Any = object()

Sleep = Callable[[float], Awaitable[None]]
Convert = Callable[[str], Any]
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


def parse_csv(
    content: bytes, converters: Mapping[str, Convert] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a Bulk CSV page, header row first, decoded and split as they are read.

    Bulk cannot tell null from empty, and Salesforce stores no empty strings, so
    an empty cell is ``None``. ``converters`` (column -> function) turn the text
    of typed columns into what REST JSON would hold (see :func:`rest_converters`).

    Rows are converted :data:`ROWS_AT_ONCE` at a time, column by column: a column of
    numbers or booleans goes through ``float``, ``int`` or a dict lookup in one list
    comprehension, with no Python call per cell (a seventh of the parse's instructions).
    """
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    converters = converters or {}
    typed = [(i, converters[name]) for i, name in enumerate(header) if name in converters]
    full_width = {len(header)}
    while rows := list(itertools.islice(reader, ROWS_AT_ONCE)):
        if set(map(len, rows)) == full_width:
            yield from _records(header, rows, typed)
            continue
        for cells in rows:  # a blank line, a short or long row: names for what it has
            if cells:
                yield _ragged(header, [cell or None for cell in cells], converters)


def _records(
    header: list[str], rows: list[list[str]], typed: list[tuple[int, Convert]]
) -> list[dict[str, Any]]:
    """Full-width rows as dicts, typed column by column.

    Every row is as wide as the header (checked by the caller), so no zip checks lengths.
    """
    columns: list[Sequence[Any]] = list(zip(*rows, strict=False))
    for index, cells in enumerate(columns):
        if "" in cells:
            columns[index] = [cell or None for cell in cells]
    for index, convert in typed:
        columns[index] = _column(columns[index], convert)
    return [dict(zip(header, values, strict=False)) for values in zip(*columns, strict=False)]


def _column(cells: Sequence[str | None], convert: Convert) -> list[Any]:
    """``convert`` of every cell but the empty ones (``None``)."""
    exact = _EXACT_FORMS.get(convert)
    if exact is not None:
        try:
            return [None if cell is None else exact(cell) for cell in cells]
        except (ValueError, KeyError):
            pass  # a text only ``convert`` knows (say "1.5E3" in an int column)
    # Booleans, picklist-like numbers and stamps repeat: each text converted once.
    memo: dict[str, Any] = {}
    converted: list[Any] = []
    for cell in cells:
        if cell is None:
            converted.append(None)
            continue
        value = memo.get(cell, _UNSEEN)
        if value is _UNSEEN:
            value = convert(cell)
            if len(memo) < MEMO_TEXTS:
                memo[cell] = value
        converted.append(value)
    return converted


def _ragged(
    header: list[str], values: list[Any], converters: Mapping[str, Convert]
) -> dict[str, Any]:
    record: dict[str, Any] = dict(zip(header, values, strict=False))
    for name, convert in converters.items():
        value = record.get(name)
        if value is not None:
            record[name] = convert(value)
    return record


def rest_converters(types: Mapping[str, str]) -> dict[str, Convert]:
    """Per-column functions from CSV text to REST JSON values, by describe ``type``.

    The stream path sees REST/CDC JSON; converting here means a backfilled
    record enters the transform exactly as a re-read one would, so both paths
    leave identical properties.
    """
    converters: dict[str, Convert] = {}
    for name, sf_type in types.items():
        convert = _CONVERTERS.get(sf_type)
        if convert is not None:
            converters[name] = convert
    return converters


def _boolean(text: str) -> Any:
    lowered = text.lower()
    return lowered == "true" if lowered in ("true", "false") else text


def _integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _double(text)


def _double(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _datetime(text: str) -> str:
    # Bulk writes 2024-04-09T20:26:27.000Z, REST 2024-04-09T20:26:27.000+0000.
    return text[:-1] + "+0000" if text.endswith("Z") else text


_BOOLEANS: Final = {"true": True, "false": False}
# A C-level function answering what the converter answers for every text it takes,
# and raising ValueError or KeyError for the others.
_EXACT_FORMS: Final[dict[Convert, Convert]] = {
    _boolean: _BOOLEANS.__getitem__,
    _integer: int,
    _double: float,
}

_CONVERTERS: Final[dict[str, Convert]] = {
    "boolean": _boolean,
    "int": _integer,
    "long": _integer,
    "double": _double,
    "currency": _double,
    "percent": _double,
    "datetime": _datetime,
}


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
            body = response.json()
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


def batched(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive lists of up to ``size`` rows."""
    while batch := list(itertools.islice(rows, size)):
        yield batch


def select_list(fields: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(fields))
