"""Reading an object for a backfill or a re-sync: Bulk API 2.0 pages, or REST by Id.

Records come out typed as REST JSON, in batches, each with the position to
resume from once it (and everything before it) was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

import structlog

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.errors import (
    ConfigError,
    SalesforceRequestError,
    SalesforceUnavailableError,
)
from pipeline.runtime.backfill.ahead import prefetched
from pipeline.runtime.backfill.jobs import create_job, forget_job, forget_unsaved_job
from pipeline.runtime.salesforce_reads import fields_to_read
from pipeline.salesforce.bulk import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_MAX_RECORDS,
    BulkQuery,
    select_list,
)
from pipeline.salesforce.bulk_csv import after_rows, rest_converters
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.envelope import Source
from pipeline.transform.schema import ObjectSchema, schema_from_describe

# Objects this small are cheaper through REST (a few query pages) than a Bulk job.
DEFAULT_REST_MAX_RECORDS: Final = 10_000
# A snapshot's first Bulk result page holds this many batches (the others up to
# ``max_records`` rows), so that transforming and sending start sooner.
FIRST_PAGE_BATCHES: Final = 3

Api = Literal["auto", "bulk", "rest"]
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How records are read: which API, page and batch sizes."""

    api: Api = "auto"
    rest_max_records: int = DEFAULT_REST_MAX_RECORDS
    max_records: int = DEFAULT_MAX_RECORDS  # Bulk rows per result page
    batch_rows: int = DEFAULT_BATCH_ROWS  # rows handed on at a time


@dataclass(slots=True)
class ReadPosition:
    """Where a read stands: everything before it was handed on (and, in a backfill, delivered).

    Bulk: ``job_id`` + ``locator`` of the current page (None: the first) + ``rows_done``
    in that page. REST: ``last_id`` of a read ordered by Id. ``finished`` once all is read.
    ``rows_read``: the rows handed on before it since the read began, a stopped run's
    included when this one resumed it (what a resumed run's progress starts from; 0 in
    a checkpoint written before it was kept).
    """

    method: Literal["bulk", "rest"] | None = None
    job_id: str | None = None
    locator: str | None = None
    rows_done: int = 0
    last_id: str | None = None
    finished: bool = False
    rows_read: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReadPosition:
        position = cls(**{key: data[key] for key in cls.__slots__ if key in data})
        if type(position.rows_read) is not int or position.rows_read < 0:
            position.rows_read = 0  # only progress reads it: not a reason to refuse the file
        return position


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Typed records (REST JSON shape) and the position right after them; a Bulk batch's
    records are a :class:`~pipeline.salesforce.bulk_csv.RowColumns` when its rows are
    full-width."""

    records: Sequence[dict[str, Any]]
    source: Source
    position: ReadPosition
    total: int | None

    @property
    def rows_before(self) -> int:
        """The rows the read handed on before this batch (a stopped run's included)."""
        return self.position.rows_read - len(self.records)


DEFAULT_READ_OPTIONS: Final = ReadOptions()
ReadProgress = Callable[[int, int | None], None]


def snapshot_fields(config: MappingConfig, sfdc_object: str, schema: ObjectSchema) -> list[str]:
    """What a whole-object read selects: every mapped field (compounds as components),
    and ``SystemModstamp`` to order the snapshot against change events; only fields the
    describe knows."""
    wanted = [*fields_to_read(config, sfdc_object, schema), "SystemModstamp"]
    return [name for name in dict.fromkeys(wanted) if schema.field(name) is not None]


async def read_object(
    sf: SalesforceClient,
    mapping: ObjectMapping,
    *,
    where: str | None = None,
    checkpoint: ReadPosition | None = None,
    progress: ReadProgress | None = None,
    options: ReadOptions = DEFAULT_READ_OPTIONS,
) -> AsyncGenerator[Sequence[dict[str, Any]]]:
    """Every record of ``mapping``'s object, page by page, typed as REST JSON.

    Records hold ``Id``, the group name field, the mapped fields (compound ones as
    components) and ``SystemModstamp``. ``checkpoint`` is read as the start and
    moved forward when the caller asks for the next page, i.e. once it is done
    with the previous one; ``progress(rows, total)`` is called per page.
    """
    schema = schema_from_describe(await sf.rest.describe(mapping.sfdc_object))
    config = MappingConfig(sync_cadence={"mode": "hourly"}, mappings=[mapping])
    fields = snapshot_fields(config, mapping.sfdc_object, schema)
    bulk = BulkQuery(sf.rest)
    start = replace(checkpoint) if checkpoint is not None else None
    job_id: str | None = None
    batches = read_batches(sf, bulk, schema, fields, where=where, start=start, options=options)
    async with contextlib.aclosing(batches):  # closed with this one: its page reader stops
        async for batch in batches:
            job_id = batch.position.job_id or job_id
            if progress is not None:
                progress(len(batch.records), batch.total)
            yield batch.records
            if checkpoint is not None:
                _copy_position(batch.position, checkpoint)
    await forget_job(bulk, job_id)


async def read_batches(
    sf: SalesforceClient,
    bulk: BulkQuery,
    schema: ObjectSchema,
    fields: Sequence[str],
    *,
    where: str | None,
    start: ReadPosition | None,
    options: ReadOptions,
    total: int | None = None,
    on_job: Callable[[str], None] | None = None,
    turn: asyncio.Event | None = None,
) -> AsyncGenerator[RecordBatch]:
    """Batches of an object's records from ``start``, by Bulk or REST (see the module doc).

    ``total`` is the :func:`count_records` answer when the caller already has it;
    ``on_job`` is told the Bulk job's id once it is complete, before the first page
    (a run stopped before its checkpoint names the job deletes it: see
    :func:`forget_unsaved_job`). With ``turn``, no page is read before it is set: an
    object opened ahead has its Bulk job run, but holds no page, and no REST query
    cursor that Salesforce drops after 15 minutes idle.
    """
    if start is not None and start.finished:
        return
    job, resumed_rest = None, start is not None and start.method == "rest"
    if not resumed_rest:
        if total is None:
            total = await count_records(sf, schema.name, where)
        resuming_bulk = start is not None and start.method == "bulk"
        if options.api == "bulk" or (
            options.api == "auto" and (resuming_bulk or total > options.rest_max_records)
        ):
            soql = _soql(schema.name, fields, where)
            job = await _bulk_job(bulk, soql, start, allow_fallback=options.api == "auto")
            if job is not None and on_job is not None:
                on_job(job[0])  # before anything else is awaited: a stop then deletes it
        await _forget_stopped_job(bulk, start, None if job is None else job[0])
    if turn is not None:
        await turn.wait()
    if job is None:
        last_id = start.last_id if start is not None and resumed_rest else None
        rest = (schema.name, fields, where, last_id)
        batches = _rest_batches(sf, *rest, total, rows=options.batch_rows)
    else:
        batches = _bulk_batches(bulk, schema, job, start, options)
    # The stopped run's rows count when this read goes on from its position: the same
    # Bulk job's, or the REST query's after its last Id (a new job reads from the start).
    going_on = start is not None and (resumed_rest or (job is not None and job[0] == start.job_id))
    rows_read = start.rows_read if start is not None and going_on else 0
    # Closed with this one, however it ends: the page reader stops before anyone deletes
    # the job it reads (see ahead.prefetched).
    async with contextlib.aclosing(batches):
        async for batch in batches:
            rows_read += len(batch.records)
            batch.position.rows_read = rows_read
            yield batch


async def _forget_stopped_job(
    bulk: BulkQuery, start: ReadPosition | None, kept: str | None
) -> None:
    """A resumed read that goes on without the stopped run's Bulk job (read through REST,
    or in a new job: the old one failed or is gone) deletes it; nothing else would."""
    if start is not None and start.method == "bulk" and start.job_id and start.job_id != kept:
        await forget_job(bulk, start.job_id)


@dataclass(frozen=True, slots=True)
class Opening:
    """What a read asks Salesforce before its first page: the describe, the record count
    and (when asked for) the server's clock for a catch-up."""

    describe: dict[str, Any]
    server_time: datetime | None
    total: int


async def open_object(
    sf: SalesforceClient, sfdc_object: str, where: str | None, *, clock: bool
) -> Opening:
    """The describe, with Salesforce's clock (``clock``) and :func:`count_records` asked at
    the same time: one round trip before the read instead of three.

    A failure is raised once all three answered, the describe's first, so an unknown
    object fails as it does alone.
    """
    describe, server_time, total = await asyncio.gather(
        sf.rest.describe(sfdc_object),
        sf.rest.server_time() if clock else _none(),
        count_records(sf, sfdc_object, where),
        return_exceptions=True,
    )
    if isinstance(describe, BaseException):
        raise describe
    if isinstance(server_time, BaseException):
        raise server_time
    if isinstance(total, BaseException):
        raise total
    return Opening(describe, server_time, total)


async def _none() -> None:
    return None


async def count_records(sf: SalesforceClient, sfdc_object: str, where: str | None) -> int:
    """``SELECT COUNT()``: the total for the ETA and the REST-or-Bulk choice (one API call)."""
    soql = f"SELECT COUNT() FROM {sfdc_object}"  # noqa: S608 - see _soql
    soql += f" WHERE {where}" if where else ""
    async for page in sf.rest.query_pages(soql):
        return page.total_size
    return 0


async def _bulk_job(
    bulk: BulkQuery, soql: str, start: ReadPosition | None, *, allow_fallback: bool
) -> tuple[str, int] | None:
    """(job id, row count) of a completed job: the checkpoint's, else a new one.

    None means Bulk is unavailable and REST should be used instead.
    """
    if start is not None and start.method == "bulk" and start.job_id:
        try:
            job = await bulk.wait(start.job_id)
            return job.id, job.records_processed
        except SalesforceRequestError as exc:
            log.warning("bulk_job_gone", job_id=start.job_id, reason=str(exc))
            start.locator, start.rows_done = None, 0
    try:
        created = await create_job(bulk, soql)
        try:
            job = await bulk.wait(created.id)
        except BaseException:  # failed, or the run stopped: nothing names the job yet
            await forget_unsaved_job(bulk, created.id, None, running=True)
            raise
    except (SalesforceRequestError, SalesforceUnavailableError) as exc:
        if not allow_fallback:
            raise
        log.warning("bulk_unavailable_using_rest", reason=str(exc))
        return None
    if start is not None:
        start.locator, start.rows_done = None, 0
    return job.id, job.records_processed


async def _bulk_batches(
    bulk: BulkQuery,
    schema: ObjectSchema,
    job: tuple[str, int],
    start: ReadPosition | None,
    options: ReadOptions,
) -> AsyncGenerator[RecordBatch]:
    job_id, total = job
    converters = rest_converters({name: info.type for name, info in schema.fields.items()})
    locator = start.locator if start is not None and start.job_id == job_id else None
    skip = start.rows_done if start is not None and start.job_id == job_id else 0
    pages = bulk.pages(
        job_id, locator=locator, max_records=options.max_records,
        first_max_records=_first_page_rows(options) if locator is None and not skip else None,
    )  # fmt: skip
    # The next page downloads while this one is used; closed however this one ends.
    async with contextlib.aclosing(prefetched(pages)) as read:
        async for page in read:
            collect_page_garbage()
            # A batch is a block of the page: typed column by column, its dicts built
            # only if something reads them (the backfill's transform does not).
            batches = after_rows(page.blocks(converters, rows=options.batch_rows), skip)
            done, skip = skip, 0
            current = next(batches, None)
            if current is None:
                # Only reached for an empty page, or a resume that had done a page exactly.
                yield _bulk_batch([], job_id, page.next_locator, 0, total)
                continue
            counted = page.number_of_records >= 0
            while current is not None:
                done += len(current)
                # The page's row count says which batch is its last; without it, look ahead
                # (which holds one more batch in memory).
                following = None if counted else next(batches, None)
                if (done >= page.number_of_records) if counted else following is None:
                    yield _bulk_batch(current, job_id, page.next_locator, 0, total)
                else:
                    yield _bulk_batch(current, job_id, page.locator, done, total, last=False)
                current = next(batches, None) if counted else following


def _first_page_rows(options: ReadOptions) -> int:
    return min(options.max_records, FIRST_PAGE_BATCHES * options.batch_rows)


def _bulk_batch(
    records: Sequence[dict[str, Any]],
    job_id: str,
    locator: str | None,
    rows_done: int,
    total: int,
    *,
    last: bool = True,
) -> RecordBatch:
    # The last batch of a page points at the next page; of the last page, at nothing.
    finished = last and locator is None
    position = ReadPosition("bulk", job_id, locator, rows_done, None, finished)
    return RecordBatch(records, "bulk", position, total)


async def _rest_batches(
    sf: SalesforceClient,
    sfdc_object: str,
    fields: Sequence[str],
    where: str | None,
    after_id: str | None,
    total: int | None,
    *,
    rows: int,
) -> AsyncGenerator[RecordBatch]:
    """REST query ordered by Id, so that "last Id" is a position to resume from; batches
    of ``rows`` records across its pages of 2,000, so that each fills one request as a
    Bulk batch does (a page of 2,000 made a request of 1,999 events and one of 1)."""
    conditions = [f"({where})"] if where else []
    if after_id:
        conditions.append(f"Id > '{_checked_id(after_id)}'")
    soql = _soql(sfdc_object, fields, " AND ".join(conditions) or None) + " ORDER BY Id"
    held: list[dict[str, Any]] = []
    last_id, finished = after_id, False
    async for page in sf.rest.query_pages(soql):
        held.extend(page.records)
        while len(held) >= rows or (page.done and held):
            batch, held = held[:rows], held[rows:]
            last_id, finished = str(batch[-1]["Id"]), page.done and not held
            yield RecordBatch(
                batch, "rest", ReadPosition("rest", None, None, 0, last_id, finished), total
            )
    if not finished:  # nothing at all, or a last page that was empty: the end, said
        yield RecordBatch([], "rest", ReadPosition("rest", None, None, 0, last_id, True), total)


def _soql(sfdc_object: str, fields: Sequence[str], where: str | None) -> str:
    # Object and field names come from a validated mapping and the describe;
    # ``where`` is the user's own SOQL condition, passed on as given.
    soql = f"SELECT {select_list(fields)} FROM {sfdc_object}"  # noqa: S608
    return soql + (f" WHERE {where}" if where else "")


def _checked_id(record_id: str) -> str:
    if not record_id.isascii() or not record_id.isalnum():
        raise ConfigError(f"checkpoint holds an invalid record id {record_id!r}")
    return record_id


def _copy_position(source: ReadPosition, target: ReadPosition) -> None:
    for key in ReadPosition.__slots__:
        setattr(target, key, getattr(source, key))


def collect_page_garbage() -> None:
    """Free what the last result page left in reference cycles; call once per page.

    httpx keeps every response in a reference cycle (the response and its stream), so
    a result page's body (several MB) and the Amplitude request bodies sent while it
    was used are freed only by the cyclic collector. Under the CLI's relaxed
    thresholds (:mod:`pipeline.gc_tuning`) they reach the oldest generation and wait
    for a full collection, tens of millions of allocations away: a million-record
    backfill then held hundreds of MB of them. One full collection per page (tens of
    milliseconds for 50,000 rows) keeps that to about a page's worth.
    """
    gc.collect()


class BulkWindowReads:
    """A query's records page by page through a Bulk API 2.0 job, typed as REST JSON;
    the job is deleted once read (catch-up rounds of a large window read this way)."""

    def __init__(self, bulk: BulkQuery, schema: ObjectSchema, options: ReadOptions) -> None:
        self._bulk = bulk
        self._converters = rest_converters({n: info.type for n, info in schema.fields.items()})
        self._options = options

    async def pages(self, soql: str, *, all_rows: bool) -> AsyncGenerator[list[dict[str, Any]]]:
        """Lists of up to ``batch_rows`` records; the next CSV page downloads meanwhile."""
        job = await create_job(self._bulk, soql, all_rows=all_rows)
        try:
            await self._bulk.wait(job.id)
            pages = self._bulk.pages(job.id, max_records=self._options.max_records)
            async with contextlib.aclosing(prefetched(pages)) as read:
                async for page in read:
                    collect_page_garbage()
                    for rows in page.blocks(self._converters, rows=self._options.batch_rows):
                        yield list(rows)  # compared and kept row by row
        finally:  # read, failed or stopped (maybe still running): of no further use
            await forget_unsaved_job(self._bulk, job.id, None, running=True)
