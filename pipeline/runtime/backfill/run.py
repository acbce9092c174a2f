"""``run_backfill``: every object of the mapping read, transformed and delivered in batches
(the next batch read and transformed while the previous one is on the wire), each
object's snapshot ended by catch-up reads of what changed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from pipeline.amplitude import AmplitudeClient
from pipeline.amplitude.payload import to_identification
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import (
    MappingError,
    SalesforceError,
    SalesforceRequestError,
    SfampError,
    UnreadableFieldsError,
)
from pipeline.runtime.backfill.ahead import OBJECTS_AHEAD, beside, in_turn
from pipeline.runtime.backfill.checkpoint import (
    DEFAULT_CHECKPOINT,
    REJECTED_FILE,
    CheckpointFile,
    DlqMode,
    RejectSink,
)
from pipeline.runtime.backfill.deliver import BackfillRun, InFlightBatches, ObjectRun
from pipeline.runtime.backfill.jobs import forget_unsaved_job
from pipeline.runtime.backfill.opening import abandon, begin_object, unique_by_schema
from pipeline.runtime.backfill.read import (
    DEFAULT_READ_OPTIONS,
    ReadOptions,
    ReadPosition,
    RecordBatch,
)
from pipeline.runtime.backfill.report import BackfillProgress, BackfillSummary, ObjectSummary
from pipeline.runtime.backfill.stream_start import record_stream_start, stream_start_recorded
from pipeline.runtime.checkpoint_lock import exclusive
from pipeline.runtime.progress import ticking
from pipeline.runtime.reconcile.recorder import command_recorder
from pipeline.runtime.salesforce_reads import mapped_fields, refused_field
from pipeline.runtime.tasks import StopRequest, seen_through, until_stopped
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.bulk_csv import batched
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.apply import PropertyChanges
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.envelope import Source
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import ObjectSchema
from pipeline.wording import nearest

SAMPLE_SIZE: Final = 3
log = structlog.get_logger(__name__)


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
    stop: StopRequest | None = None,
) -> BackfillSummary:
    """Backfill the mapped objects (or ``objects``) and say what happened.

    Known failures (REQUEST_LIMIT_EXCEEDED, Amplitude unavailable or refusing the
    key, ...) do not raise: they end the run with ``summary.error`` set and the
    checkpoint kept; so does ``stop`` (``summary.interrupted``). An unwritable
    checkpoint raises before anything is sent. A dry run reads and transforms
    everything, sends nothing, writes no checkpoint and fills
    ``summary.requests``/``bytes`` with the plan. Rejected identifications go to
    ``sfamp.dlq`` or, without Kafka, to ``backfill-rejected.jsonl`` beside the
    checkpoint. Each object's snapshot ends with catch-up reads (``catch_up.py``).
    """
    config = selected_objects(mapping_config, objects)
    summary = BackfillSummary(dry_run=dry_run, resumed=resume, checkpoint=str(checkpoint_path))
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        resume_from = CheckpointFile.load(checkpoint_path) if resume else None
        checkpoint = None if dry_run else resume_from or CheckpointFile(checkpoint_path)
        if checkpoint is not None:
            checkpoint.check_writable()
            # One run per checkpoint: two would interleave their saves.
            running = "another sfamp backfill"
            stack.enter_context(exclusive(checkpoint_path, "backfill", running=running))
            if resume_from is None:
                checkpoint.begin()  # a --resume after this run stops resumes this run
        sf = salesforce
        if sf is None:
            sf = await stack.enter_async_context(
                SalesforceClient.from_settings(settings.salesforce)
            )
        amplitude = await stack.enter_async_context(AmplitudeClient(settings.amplitude))
        sink = RejectSink(settings, dlq, checkpoint_path.parent / REJECTED_FILE)
        stack.push_async_callback(sink.aclose)
        run = BackfillRun(
            config, sf, BulkQuery(sf.rest), amplitude, checkpoint, resume_from, sink,
            progress, options, where, summary,
        )  # fmt: skip
        if checkpoint is not None:  # what a reconcile compares; a dry run sends nothing
            run.sent = command_recorder(settings.kafka, None, stack)  # learns each describe
        if checkpoint is not None and settings.salesforce.replay_start == "latest":
            # Beside the reads; the run ends once it is stored (or known not to be).
            marking = asyncio.create_task(record_stream_start(settings, config.objects))
            stack.push_async_callback(stream_start_recorded, marking)
        calls_before = sf.rest.api_calls
        try:
            work = ticking(progress, _backfill_objects(run))  # timely lines on a slow Amplitude
            summary.interrupted = await until_stopped(work, stop)
            if summary.interrupted is not None:
                log.warning("backfill_interrupted", signal=summary.interrupted)
        except SfampError as exc:  # the caller reports it: the command's line, the demo's
            summary.error = _named(exc, config, summary)
        finally:
            summary.api_calls = sf.rest.api_calls - calls_before
            summary.bulk_jobs = run.bulk.jobs_created
            summary.rejected_to = sink.destination
            summary.duplicates = run.duplicates.report()
            summary.elapsed_seconds = time.monotonic() - started
            summary.checkpoint_saved = checkpoint is not None and checkpoint.saved
        if summary.error is not None and checkpoint is not None and resume_from is None:
            summary.checkpoint_put_back = _put_back(checkpoint)
    return summary


def _named(exc: SfampError, config: MappingConfig, summary: BackfillSummary) -> SfampError:
    """A query refused for a mapped field of the object being read (hidden by field-level
    security since the run checked it) as the start check names it, not as raw SOQL."""
    field = refused_field(exc) if isinstance(exc, SalesforceRequestError) else None
    reading = [item.sfdc_object for item in summary.objects if not item.finished]
    if field is None or not reading:
        return exc
    mapped = field in mapped_fields(config, reading[-1])
    return UnreadableFieldsError(reading[-1], [field]) if mapped else exc


def _put_back(checkpoint: CheckpointFile) -> bool:
    """An earlier run's checkpoint, replaced by a run refused before it confirmed a batch,
    written back (see :meth:`CheckpointFile.put_back`)."""
    try:
        kept = checkpoint.put_back()
    except OSError as exc:
        log.warning("backfill_checkpoint_not_put_back", path=str(checkpoint.path), reason=str(exc))
        return False
    if kept:
        log.info("backfill_checkpoint_put_back", path=str(checkpoint.path))
    return kept


async def _backfill_objects(run: BackfillRun) -> None:
    """Object by object, in the mapping's order; the next ones (up to
    :data:`OBJECTS_AHEAD`) are opened and their reads begun while this one is read
    (``opening.py``)."""
    items = [ObjectSummary(sfdc_object) for sfdc_object in run.config.objects]

    async def work(obj: ObjectRun | None) -> None:
        if obj is not None:
            await _backfill_object(run, obj)

    async def abandoned(obj: ObjectRun | None) -> None:
        if obj is not None:
            await abandon(run, obj)

    await in_turn(
        len(items), lambda i: begin_object(run, items[i]), work, abandoned,
        turn=lambda i: run.summary.objects.append(items[i]), ahead=OBJECTS_AHEAD,
    )  # fmt: skip


def selected_objects(config: MappingConfig, objects: Sequence[str] | None) -> MappingConfig:
    """``config`` with the mappings of ``objects`` only (None or empty: all of them).

    Raises :class:`MappingError` naming every object of ``objects`` nothing maps.
    """
    if not objects:
        return config
    unknown = [name for name in objects if not config.for_object(name)]
    if unknown:
        meant = list(dict.fromkeys(n for name in unknown if (n := nearest(name, config.objects))))
        hint = f" (did you mean {', '.join(meant)}?)" if meant else ""
        raise MappingError(
            f"no mapping for {', '.join(unknown)}{hint}; mapped objects: "
            f"{', '.join(config.objects)}"
        )
    wanted = set(objects)
    return config.model_copy(
        update={"mappings": [m for m in config.mappings if m.sfdc_object in wanted]}
    )


async def _backfill_object(run: BackfillRun, obj: ObjectRun) -> None:
    obj.turn.set()  # its read goes on past the Bulk job, to the pages
    for mapping in obj.config.mappings:  # from its turn on, as when opened at its turn
        if not unique_by_schema(mapping, obj.schema):
            run.duplicates.track(mapping.group_type)
    unread = obj.start is None or (obj.start.method is None and not obj.start.finished)
    try:
        try:
            if obj.catch_up is not None and unread:
                # Before the snapshot's batches (and again after a stop before its first:
                # they are checkpointed as nothing read yet); never after them, not even
                # on a resume during the catch-up, whose newer live reads it would land over.
                bin_reads = obj.catch_up.deleted_before()
                await _send_reads(run, obj, bin_reads, ReadPosition(), from_bin=True)
            await _snapshot(run, obj)
        except BaseException:  # stopped or failed: a job no checkpoint names is of no use
            # Seen through: a second stop meanwhile would leave the job in the org.
            await seen_through(abandon(run, obj))
            raise
        if run.checkpoint is None:  # a dry run: nothing was sent, nothing to catch up
            await forget_unsaved_job(run.bulk, obj.job_id, obj.saved_job)
        else:
            # The snapshot's job is read to its end (and checkpointed so): deleted meanwhile.
            # Seen through a stop once begun (the object is then complete: nothing else
            # would delete the job).
            forget = forget_unsaved_job(run.bulk, obj.job_id, None)
            await beside(_catch_up_and_save(run, obj), forget)
    finally:
        if obj.first_round is not None:
            await obj.first_round.aclose()
    obj.item.finished = True
    if run.progress is not None:
        run.progress.finish_object(obj.item)


async def _catch_up_and_save(run: BackfillRun, obj: ObjectRun) -> None:
    await _catch_up(run, obj)
    obj.save(run, ReadPosition(finished=True), complete=True)


async def _snapshot(run: BackfillRun, obj: ObjectRun) -> None:
    assert obj.reader is not None  # begun when the object was opened
    window = InFlightBatches(run, obj)
    try:
        try:
            async for batch in obj.reader:
                _started(run, obj, batch)
                # Transformed while the previous batch is still on the wire.
                updates, keys = _updates(run, obj, batch.records, batch.source)
                await window.push(batch, updates, keys)
        except SalesforceError as exc:
            await window.settle_after(exc)
            raise
        if obj.catch_up is not None:
            # Every record is read: the catch-up's first read goes while the last
            # batches are on the wire (compared once they were delivered).
            obj.first_round = obj.catch_up.read_ahead()
        await window.drain()
    finally:
        try:
            await obj.reader.aclose()
        finally:  # also when a second stop cuts the close short
            await window.cancel()


def _started(run: BackfillRun, obj: ObjectRun, batch: RecordBatch) -> None:
    obj.job_id = batch.position.job_id or obj.job_id
    if not obj.item.method:
        obj.item.method, obj.item.total = batch.source, batch.total
        if run.progress is not None:
            run.progress.start_object(
                obj.item.sfdc_object, batch.total, batch.source, done=batch.rows_before
            )


async def _catch_up(run: BackfillRun, obj: ObjectRun) -> None:
    """Re-read and re-send what changed since the snapshot started, round by round."""
    if obj.catch_up is None:
        return
    if run.progress is not None:
        run.progress.catching_up(obj.item.sfdc_object)
    try:
        rounds = obj.catch_up.rounds(obj.first_round)
        # The snapshot's job stays in the checkpoint: a resumed run deletes it.
        read = ReadPosition("bulk" if obj.job_id else "rest", obj.job_id, finished=True)
        await _send_reads(run, obj, rounds, read)
    finally:
        obj.item.catch_up_rounds = obj.catch_up.rounds_done
        obj.item.quiescent = obj.catch_up.quiescent


async def _send_reads(
    run: BackfillRun,
    obj: ObjectRun,
    rounds: AsyncGenerator[list[dict[str, Any]]],
    position: ReadPosition,
    *,
    from_bin: bool = False,
) -> None:
    """Send each round of REST reads (records read deleted as deletes), a round landing
    before the next is read; their batches are checkpointed at ``position``. ``rounds`` is
    closed (its page reader stopped) however this ends. Counted as re-sent by the
    catch-up, or ``from_bin``: as deletes read from the recycle bin (sent ahead)."""
    window = InFlightBatches(run, obj, progress=False)
    try:
        async for records in rounds:
            # Before any is sent: a resumed run sends again what this round was sending.
            obj.save(run, position)
            for chunk in batched(records, run.options.batch_rows):
                updates, keys = _updates(run, obj, chunk, "rest", first_read=False)
                await window.push(RecordBatch(chunk, "rest", position, None), updates, keys)
            await window.drain()
            if from_bin:
                obj.item.recycle_bin += len(records)
            else:
                obj.item.caught_up += len(records)
    finally:
        try:
            await rounds.aclose()
        finally:  # also when a second stop cuts the close short
            await window.cancel()


def _updates(
    run: BackfillRun,
    obj: ObjectRun,
    records: Sequence[dict[str, Any]],
    source: Source,
    *,
    first_read: bool = True,
) -> tuple[list[GroupUpdate], tuple[list[int], list[int]]]:
    """One transform per record: the batch's updates (one per group) and the catch-up keys
    (by meaning, and as read) of its reads inside the window.

    Groups named by a unique field under a single mapping occur once per batch,
    so their changes become updates directly; anything else is coalesced. Only a
    record's first read counts in the summary (rows, duplicates, sample).
    """
    now_ms = int(time.time() * 1000)
    keys: list[int] = []
    raw: list[int] = []
    item, catch_up = obj.item, obj.catch_up
    read = obj.meaning.meaning_of(records, source=source, now_ms=now_ms)
    changes = read.changes
    if first_read:
        item.without_group += read.others
        run.duplicates.see_all(changes)
        if catch_up is not None:
            catch_up.read_again_if_binned(records)
    if catch_up is not None:
        for index in catch_up.in_window_at(records):
            record = records[index]
            keys.append(catch_up.key_of(record, read.outcomes(index)))
            raw.append(catch_up.raw_key(record))
    updates = _merged(changes, obj.config, obj.schema)
    if first_read:
        item.rows_read += len(records)
        room = SAMPLE_SIZE - len(run.summary.sample)
        run.summary.sample += [to_identification(update) for update in updates[: max(0, room)]]
    return updates, (keys, raw)


def _merged(
    changes: list[PropertyChanges], config: MappingConfig, schema: ObjectSchema
) -> list[GroupUpdate]:
    if len(config.mappings) == 1 and unique_by_schema(config.mappings[0], schema):
        return [GroupUpdate(c.group_type, c.group_value, c.set, c.unset) for c in changes]
    coalescer = Coalescer(max_groups=max(1, len(changes)))
    for change in changes:
        coalescer.add(change)
    return coalescer.drain()
