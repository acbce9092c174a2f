"""``run_backfill``: every object of the mapping read, transformed and delivered in batches,
with the next batch read and transformed while the previous one is on the wire."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.config.settings import Settings
from pipeline.errors import MappingError, SfampError
from pipeline.runtime.backfill.checkpoint import (
    DEFAULT_CHECKPOINT,
    REJECTED_FILE,
    CheckpointFile,
    DlqMode,
    RejectSink,
    rejected_entries,
)
from pipeline.runtime.backfill.read import (
    DEFAULT_READ_OPTIONS,
    ReadOptions,
    ReadPosition,
    RecordBatch,
    forget_job,
    read_batches,
)
from pipeline.runtime.backfill.report import (
    BackfillProgress,
    BackfillSummary,
    DuplicateGroups,
    ObjectSummary,
)
from pipeline.runtime.salesforce_reads import fields_to_read
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.cdc import envelope_from_record
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import ObjectSchema, schema_from_describe

SAMPLE_SIZE: Final = 3
# Batches being sent at once; two lets one transform while the other is on the wire.
MAX_IN_FLIGHT: Final = 2
log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Run:
    """Everything one backfill shares across its objects."""

    config: MappingConfig
    sf: SalesforceClient
    bulk: BulkQuery
    amplitude: AmplitudeClient
    checkpoint: CheckpointFile | None  # None in a dry run: nothing is delivered
    resume_from: CheckpointFile | None
    sink: RejectSink
    progress: BackfillProgress | None
    options: ReadOptions
    where: str | None
    summary: BackfillSummary
    duplicates: DuplicateGroups = field(default_factory=DuplicateGroups)


async def run_backfill(
    settings: Settings,
    mapping_config: MappingConfig,
    *,
    objects: Sequence[str] | None = None,
    where: str | None = None,
    dry_run: bool = False,
    resume: bool = False,
    checkpoint_path: Path = DEFAULT_CHECKPOINT,
    progress: BackfillProgress | None = None,
    dlq: DlqMode = "auto",
    options: ReadOptions = DEFAULT_READ_OPTIONS,
    salesforce: SalesforceClient | None = None,
) -> BackfillSummary:
    """Backfill the mapped objects (or ``objects``) and say what happened.

    Known failures (REQUEST_LIMIT_EXCEEDED, Amplitude unavailable or refusing the
    key, ...) do not raise: they end the run with ``summary.error`` set and the
    checkpoint kept. A dry run reads and transforms everything, sends nothing,
    writes no checkpoint and fills ``summary.requests``/``bytes`` with the plan.
    Rejected identifications go to ``sfamp.dlq`` or, without Kafka, to
    ``backfill-rejected.jsonl`` beside the checkpoint.
    """
    config = _selected(mapping_config, objects)
    summary = BackfillSummary(dry_run=dry_run, resumed=resume, checkpoint=str(checkpoint_path))
    resume_from = CheckpointFile.load(checkpoint_path) if resume else None
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        sf = salesforce
        if sf is None:
            sf = await stack.enter_async_context(
                SalesforceClient.from_settings(settings.salesforce)
            )
        amplitude = await stack.enter_async_context(AmplitudeClient(settings.amplitude))
        sink = RejectSink(settings, dlq, checkpoint_path.parent / REJECTED_FILE)
        stack.push_async_callback(sink.aclose)
        checkpoint = None
        if not dry_run:
            checkpoint = resume_from or CheckpointFile(checkpoint_path)
        run = _Run(
            config, sf, BulkQuery(sf.rest), amplitude, checkpoint, resume_from, sink,
            progress, options, where, summary,
        )  # fmt: skip
        calls_before = sf.rest.api_calls
        try:
            for sfdc_object in config.objects:
                await _backfill_object(run, sfdc_object)
        except SfampError as exc:
            log.error("backfill_stopped", error=type(exc).__name__, reason=str(exc))
            summary.error = exc
        finally:
            summary.api_calls = sf.rest.api_calls - calls_before
            summary.bulk_jobs = run.bulk.jobs_created
            summary.rejected_to = sink.destination
            summary.duplicates = run.duplicates.report()
            summary.elapsed_seconds = time.monotonic() - started
    return summary


def _selected(config: MappingConfig, objects: Sequence[str] | None) -> MappingConfig:
    if not objects:
        return config
    unknown = [name for name in objects if not config.for_object(name)]
    if unknown:
        raise MappingError(
            f"no mapping for {', '.join(unknown)}; mapped objects: {', '.join(config.objects)}"
        )
    wanted = set(objects)
    return config.model_copy(
        update={"mappings": [m for m in config.mappings if m.sfdc_object in wanted]}
    )


async def _backfill_object(run: _Run, sfdc_object: str) -> None:
    item = ObjectSummary(sfdc_object)
    run.summary.objects.append(item)
    schema = schema_from_describe(await run.sf.rest.describe(sfdc_object))
    fields = fields_to_read(run.config, sfdc_object, schema)
    mappings = run.config.for_object(sfdc_object)
    fingerprint = _fingerprint(mappings, fields, run.where)
    start = None if run.resume_from is None else run.resume_from.position(sfdc_object, fingerprint)
    if start is not None and start.finished:
        item.already_done = item.finished = True
        log.info("backfill_object_already_done", object=sfdc_object)
        return
    for mapping in mappings:
        if not _unique_by_schema(mapping, schema):
            run.duplicates.track(mapping.group_type)
    object_config = run.config.model_copy(update={"mappings": mappings})
    reader = read_batches(
        run.sf, run.bulk, schema, fields, where=run.where, start=start, options=run.options
    )
    job_id: str | None = None
    window = _Window(run, item, fingerprint)
    try:
        async for batch in _prefetched(reader):
            if not item.method:
                item.method, item.total = batch.source, batch.total
                if run.progress is not None:
                    run.progress.start_object(sfdc_object, batch.total, batch.source)
            job_id = batch.position.job_id or job_id
            # Transformed while the previous batch is still on the wire (see _Window).
            updates = _updates(run, item, object_config, schema, batch)
            await window.push(batch, updates)
        await window.drain()
    finally:
        await window.cancel()
    item.finished = True
    if run.checkpoint is not None:
        run.checkpoint.save(sfdc_object, fingerprint, ReadPosition(finished=True))
        await forget_job(run.bulk, job_id)
    if run.progress is not None:
        run.progress.finish_object(item)


class _Window:
    """Deliveries of one object in flight, settled in read order.

    While one batch is being sent the next is transformed; a batch's position
    is checkpointed only once it and every batch before it were delivered.
    """

    def __init__(self, run: _Run, item: ObjectSummary, fingerprint: str) -> None:
        self._run, self._item, self._fingerprint = run, item, fingerprint
        self._pending: collections.deque[tuple[asyncio.Task[int], RecordBatch]] = (
            collections.deque()
        )

    async def push(self, batch: RecordBatch, updates: list[GroupUpdate]) -> None:
        task = asyncio.create_task(_deliver(self._run, self._item, updates))
        self._pending.append((task, batch))
        while len(self._pending) >= MAX_IN_FLIGHT:
            await self._settle_oldest()

    async def drain(self) -> None:
        while self._pending:
            await self._settle_oldest()

    async def cancel(self) -> None:
        """Stop whatever is still in flight (after an error); nothing is checkpointed."""
        tasks = [task for task, _ in self._pending]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle_oldest(self) -> None:
        task, batch = self._pending[0]
        sent = await task
        self._pending.popleft()
        run, name = self._run, self._item.sfdc_object
        if run.checkpoint is not None:
            run.checkpoint.save(name, self._fingerprint, batch.position)
        if run.progress is not None:
            run.progress.advance(name, len(batch.records), sent)


async def _prefetched(batches: AsyncIterator[RecordBatch]) -> AsyncIterator[RecordBatch]:
    """The batches, with the next one read from Salesforce while this one is delivered.

    The reader task is owned here: it is cancelled and awaited however the loop ends,
    and its errors come out of this generator.
    """
    queue: asyncio.Queue[RecordBatch | BaseException | None] = asyncio.Queue(maxsize=1)

    async def read() -> None:
        try:
            async for batch in batches:
                await queue.put(batch)
            await queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(exc)

    reader = asyncio.create_task(read())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _deliver(run: _Run, item: ObjectSummary, updates: list[GroupUpdate]) -> int:
    """Send (or, in a dry run, plan) one batch's updates; rejects go to the sink."""
    if run.checkpoint is None:
        plan = run.amplitude.plan(updates)
        item.identifications += plan.identifications
        item.requests += len(plan.requests)
        item.bytes += plan.total_bytes
        return plan.identifications
    report = await run.amplitude.send(updates)
    item.identifications += report.delivered
    item.requests += report.requests
    item.bytes += report.bytes_sent
    item.rejected += len(report.rejected)
    run.summary.retries += report.retries
    await run.sink.write(rejected_entries(report, item.sfdc_object, int(time.time() * 1000)))
    return report.delivered


def _updates(
    run: _Run, item: ObjectSummary, config: MappingConfig, schema: ObjectSchema, batch: RecordBatch
) -> list[GroupUpdate]:
    """Full envelopes through the stream's transform, one update per group.

    Groups named by a unique field under a single mapping occur once per batch,
    so their changes become updates directly; anything else is coalesced.
    """
    now_ms = int(time.time() * 1000)
    changes: list[PropertyChanges] = []
    see = run.duplicates.see
    for record in batch.records:
        envelope = envelope_from_record(
            item.sfdc_object, record, source=batch.source, now_ms=now_ms
        )
        for _mapping, outcome in changes_for_config(envelope, config, schema):
            if isinstance(outcome, PropertyChanges):
                changes.append(outcome)
                see(outcome.group_type, outcome.group_value)
            else:
                item.without_group += 1
    item.rows_read += len(batch.records)
    updates = _merged(changes, config, schema)
    if len(run.summary.sample) < SAMPLE_SIZE:
        room = SAMPLE_SIZE - len(run.summary.sample)
        run.summary.sample += [update.to_identification() for update in updates[:room]]
    return updates


def _merged(
    changes: list[PropertyChanges], config: MappingConfig, schema: ObjectSchema
) -> list[GroupUpdate]:
    if len(config.mappings) == 1 and _unique_by_schema(config.mappings[0], schema):
        return [GroupUpdate(c.group_type, c.group_value, c.set, c.unset) for c in changes]
    coalescer = Coalescer(max_groups=max(1, len(changes)))
    for change in changes:
        coalescer.add(change)
    return coalescer.drain()


def _unique_by_schema(mapping: ObjectMapping, schema: ObjectSchema) -> bool:
    if mapping.group_name_field == "Id":
        return True
    info = schema.field(mapping.group_name_field)
    return info is not None and info.unique


def _fingerprint(
    mappings: Sequence[ObjectMapping], fields: Sequence[str], where: str | None
) -> str:
    document = {
        "mappings": [m.model_dump(mode="json") for m in mappings],
        "fields": list(fields),
        "where": where,
    }
    return hashlib.sha256(orjson.dumps(document)).hexdigest()[:16]
