"""``run_reconcile``: re-read what change events cannot keep fresh and write what differs.

Per mapped object with formula fields or fields change events never carry:

1. read ``Id``, the group name fields, those fields and ``SystemModstamp`` of every
   record with the backfill's reader (Bulk API 2.0; a REST query for objects under
   10,000 records or when Bulk is unavailable);
2. compare each record's values with what was last sent (``sfamp.sent``, read back
   at the start) and write one *full* read envelope per record with differences to
   ``sfamp.changes.<Object>``, holding only the fields that differ: deliver sends it
   on its cadence, ordered against the stream like any read, and records the new
   digests once Amplitude accepted them;
3. end with the snapshot catch-up rounds shared with backfills and re-syncs: a
   record changed while the object was read is read again and written with all of
   its reconciled fields, so a value read before a change never lands last.

Progress is checkpointed after every written batch with the backfill's
checkpoint file: a run that is killed resumes from it on the next run. A dry
run reads and compares only: it writes nothing to Kafka and no checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import SfampError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.compacted import scan_table
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from pipeline.runtime import checkpoint_lock
from pipeline.runtime.backfill import ReadOptions, ReadPosition, StopRequest, read_batches
from pipeline.runtime.backfill.ahead import OBJECTS_AHEAD, ReadAhead, in_turn
from pipeline.runtime.backfill.catch_up import CatchUp
from pipeline.runtime.backfill.jobs import forget_unsaved_job
from pipeline.runtime.backfill.meaning import is_deleted
from pipeline.runtime.backfill.read import RecordBatch
from pipeline.runtime.progress import ticking
from pipeline.runtime.reconcile.checkpoint import ReconcileCheckpoint, open_checkpoint
from pipeline.runtime.reconcile.compare import (
    ObjectPlan,
    Tally,
    deleted_envelope,
    differing_envelope,
)
from pipeline.runtime.reconcile.digest import SentDigests, reconciled_mapping
from pipeline.runtime.reconcile.report import ObjectReconcile, ReconcileProgress, ReconcileSummary
from pipeline.runtime.salesforce_reads import fields_to_read
from pipeline.runtime.tasks import seen_through, until_stopped
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.client import SalesforceClient
from pipeline.salesforce.rest import SalesforceRest
from pipeline.transform.envelope import ChangeEnvelope, Source, encode
from pipeline.transform.reads import MODSTAMP
from pipeline.transform.schema import schema_from_describe

CHECKPOINT_FILE: Final = "reconcile-checkpoint.json"
NOTHING_TO_READ: Final = "nothing mapped that change events cannot keep fresh"
log = structlog.get_logger(__name__)


def default_checkpoint(settings: Settings) -> Path:
    return settings.runtime.state_dir / CHECKPOINT_FILE


@dataclass(slots=True)
class _Run:
    settings: Settings
    sf: SalesforceClient
    bulk: BulkQuery
    progress: ReconcileProgress | None
    options: ReadOptions
    summary: ReconcileSummary
    producer: ChangeProducer | None = None  # None: a dry run writes nothing
    checkpoint: ReconcileCheckpoint | None = None  # None in a dry run
    digests: SentDigests = field(default_factory=SentDigests)

    async def write(self, sfdc_object: str, envelopes: list[ChangeEnvelope]) -> None:
        if self.producer is None or not envelopes:
            return
        topic = TopicNames(self.settings.kafka.topic_prefix).changes(sfdc_object)
        await self.producer.send_all([(topic, e.kafka_key, encode(e)) for e in envelopes])


async def run_reconcile(
    settings: Settings,
    config: MappingConfig,
    *,
    dry_run: bool = False,
    checkpoint_path: Path | None = None,
    progress: ReconcileProgress | None = None,
    options: ReadOptions = ReadOptions(),  # noqa: B008 - frozen
    salesforce: SalesforceClient | None = None,
    producer: ChangeProducer | None = None,
    stop: StopRequest | None = None,
) -> ReconcileSummary:
    """Reconcile every mapped object and say what happened.

    Known failures (Salesforce or Kafka unavailable, limits) do not raise: they end
    the run with ``summary.error`` set and the checkpoint kept; so does ``stop``
    (``summary.interrupted``); so does a second run on the same checkpoint while one
    is going (:class:`ConfigError`, before any record is read). A mapping without
    reconciled fields costs one describe per object and touches no file.
    """
    path = checkpoint_path or default_checkpoint(settings)
    summary = ReconcileSummary(dry_run=dry_run, checkpoint=str(path))
    summary.started_at_ms = int(time.time() * 1000)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        sf = salesforce
        if sf is None:
            sf = await stack.enter_async_context(
                SalesforceClient.from_settings(settings.salesforce)
            )
        run = _Run(settings, sf, BulkQuery(sf.rest), progress, options, summary, producer)
        calls_before = sf.rest.api_calls
        try:
            summary.interrupted = await until_stopped(
                ticking(progress, _reconcile(run, config, stack)), stop
            )
            if summary.interrupted is not None:
                log.warning("reconcile_interrupted", signal=summary.interrupted)
        except SfampError as exc:  # the caller reports it: the command's line, the service's log
            summary.error = exc
        finally:
            summary.api_calls = sf.rest.api_calls - calls_before
            summary.bulk_jobs = run.bulk.jobs_created
            summary.elapsed_seconds = time.monotonic() - started
    return summary


async def _reconcile(run: _Run, config: MappingConfig, stack: contextlib.AsyncExitStack) -> None:
    plans, run.summary.skipped = await plan_objects(run.sf.rest, config)
    if not plans:
        return
    settings, summary = run.settings, run.summary
    if summary.dry_run:
        run.producer = None
    else:
        stack.enter_context(exclusive(Path(summary.checkpoint)))
        objects = [plan.sfdc_object for plan in plans]
        await ensure_topics(settings.kafka, sfamp_topics(settings.kafka, objects))
        if run.producer is None:
            run.producer = await stack.enter_async_context(ChangeProducer(settings.kafka))
    group_types = {group_type for plan in plans for group_type in plan.group_types}
    run.digests = await load_digests(settings, group_types)
    summary.digests_known = len(run.digests)
    if not summary.dry_run:
        # Opened once Kafka answered, and a new run's entries written with its first
        # save: a run that stops before that leaves the file as the last run left it
        # (when it finished, which the service's schedule reads, or what to resume).
        run.checkpoint = open_checkpoint(Path(summary.checkpoint), plans)
        summary.resumed = run.checkpoint.resumed
    items = [ObjectReconcile(plan.sfdc_object, fields=plan.fields) for plan in plans]

    async def work(opened: _Opened | None) -> None:
        if opened is not None:
            await _reconcile_object(run, opened)

    async def abandoned(opened: _Opened | None) -> None:
        if opened is not None:
            await opened.abandon(run.bulk)

    # The next objects' reads (their Bulk jobs) are begun while this one is read, as a
    # backfill's are (``pipeline/runtime/backfill/opening.py``).
    await in_turn(
        len(plans), lambda i: _open(run, plans[i], items[i]), work, abandoned,
        turn=lambda i: summary.objects.append(items[i]), ahead=OBJECTS_AHEAD,
    )  # fmt: skip


async def plan_objects(
    rest: SalesforceRest, config: MappingConfig
) -> tuple[list[ObjectPlan], dict[str, str]]:
    """What to read per object (one describe each); the objects with nothing to read."""
    plans: list[ObjectPlan] = []
    skipped: dict[str, str] = {}
    for sfdc_object in config.objects:
        schema = schema_from_describe(await rest.describe(sfdc_object))
        found = (reconciled_mapping(m, schema) for m in config.for_object(sfdc_object))
        kept = [mapping for mapping in found if mapping is not None]
        if not kept:
            skipped[sfdc_object] = NOTHING_TO_READ
            continue
        subset = config.model_copy(update={"mappings": kept})
        fields = fields_to_read(subset, sfdc_object, schema)
        if schema.field(MODSTAMP) is not None:
            fields = list(dict.fromkeys([*fields, MODSTAMP]))
        document = {"mappings": [m.model_dump(mode="json") for m in kept], "fields": fields}
        fingerprint = hashlib.sha256(orjson.dumps(document)).hexdigest()[:16]
        plans.append(ObjectPlan(sfdc_object, schema, subset, fields, fingerprint))
    return plans, skipped


async def load_digests(settings: Settings, group_types: set[str]) -> SentDigests:
    """What was last sent for these group types, from ``sfamp.sent`` (read to its end)."""
    digests = SentDigests()
    prefixes = tuple(orjson.dumps([group_type])[:-1] + b"," for group_type in group_types)
    topic = TopicNames(settings.kafka.topic_prefix).sent
    async with contextlib.aclosing(scan_table(settings.kafka, topic)) as table:
        async for key, value in table:
            if key.startswith(prefixes):
                digests.load(key, value)
    log.info("reconcile_digests_loaded", digests=len(digests), group_types=sorted(group_types))
    return digests


@dataclass(slots=True)
class _Opened:
    """An object opened for its turn: where it resumes, its catch-up, and its snapshot's
    read begun (``found`` gets the Bulk job once it is complete)."""

    plan: ObjectPlan
    item: ObjectReconcile
    start: ReadPosition | None
    catch_up: CatchUp | None
    reader: ReadAhead[RecordBatch]  # reading no page before ``turn`` is set
    found: list[str]
    turn: asyncio.Event

    async def abandon(self, bulk: BulkQuery, saved: str | None = None) -> None:
        """The turn never came, or the run stopped in it: the read stops, and a job no
        checkpoint names (``saved``, else the one resumed from) is deleted."""
        await self.reader.aclose()
        if saved is None and self.start is not None:
            saved = self.start.job_id
        await forget_unsaved_job(bulk, self.job, saved)

    @property
    def job(self) -> str | None:
        return self.found[-1] if self.found else None


async def _open(run: _Run, plan: ObjectPlan, item: ObjectReconcile) -> _Opened | None:
    """Where the object resumes, its catch-up begun and its read begun; None when a
    resumed run had finished it."""
    saved = None if run.checkpoint is None else run.checkpoint.entry(plan)
    if saved is not None and saved.complete:
        item.already_done = item.finished = True
        log.info("reconcile_object_already_done", object=plan.sfdc_object)
        return None
    catch_up = None
    if run.checkpoint is not None:
        catch_up = await run.checkpoint.catch_up(run.sf.rest, plan, saved)
    start = None if saved is None or saved.position.method is None else saved.position
    found: list[str] = []
    turn = asyncio.Event()
    batches = read_batches(
        run.sf, run.bulk, plan.schema, plan.fields, where=None, start=start, options=run.options,
        on_job=found.append, turn=turn,
    )  # fmt: skip
    return _Opened(plan, item, start, catch_up, ReadAhead(batches), found, turn)


async def _reconcile_object(run: _Run, opened: _Opened) -> None:
    opened.turn.set()  # its read goes on past the Bulk job, to the pages
    plan, item, start, catch_up = opened.plan, opened.item, opened.start, opened.catch_up
    tally = Tally()
    # A run resumed after its snapshot reads no batch: its job is still to delete.
    read = await _snapshot(run, opened, tally) or start
    # Saved as the catch-up's position: a resume neither reads nor leaves the job again.
    done = ReadPosition(finished=True) if read is None else replace(read, finished=True)
    if catch_up is not None:
        await _catch_up(run, plan, item, catch_up, tally, done)
    item.properties, item.groups, item.finished = tally.properties, tally.groups, True
    if run.checkpoint is not None:
        run.checkpoint.save(plan, done, catch_up, complete=True)
    # Its results are no longer needed; seen through a stop (nothing else would delete it).
    await forget_unsaved_job(run.bulk, done.job_id, None)
    if run.progress is not None:
        run.progress.finish_object(item)


async def _snapshot(run: _Run, opened: _Opened, tally: Tally) -> ReadPosition | None:
    """Every record from the object's start, compared and written batch by batch; the
    position after the last batch (None: no batch was read)."""
    position: ReadPosition | None = None
    saved = None if opened.start is None else opened.start.job_id  # the checkpoint's job
    try:
        async for batch in opened.reader:
            position = batch.position
            await _snapshot_batch(run, opened.plan, opened.item, batch, opened.catch_up, tally)
            if run.checkpoint is not None:
                saved = batch.position.job_id or saved
    except BaseException:  # stopped or failed: a job no checkpoint names is of no use
        # Seen through: a second stop meanwhile would leave the job in the org.
        await seen_through(opened.abandon(run.bulk, saved))
        raise
    finally:
        await opened.reader.aclose()
    return position


async def _snapshot_batch(
    run: _Run,
    plan: ObjectPlan,
    item: ObjectReconcile,
    batch: RecordBatch,
    catch_up: CatchUp | None,
    tally: Tally,
) -> None:
    """One batch compared, written, tracked and checkpointed."""
    if not item.method:
        item.method, item.total = batch.source, batch.total
        if run.progress is not None:
            run.progress.start_object(
                plan.sfdc_object, batch.total, batch.source, done=batch.rows_before
            )
    before = tally.properties.total()
    envelopes = _envelopes(run, plan, batch.records, batch.source, tally)
    await run.write(plan.sfdc_object, envelopes)
    item.records_read += len(batch.records)
    item.records_written += len(envelopes) if run.producer is not None else 0
    item.properties, item.groups = tally.properties, tally.groups
    if catch_up is not None:
        catch_up.track(batch.records)  # every read, written or not: rounds find changes
    if run.checkpoint is not None:
        run.checkpoint.save(plan, batch.position, catch_up)
    if run.progress is not None:
        differing = tally.properties.total() - before
        run.progress.advance(plan.sfdc_object, len(batch.records), differing)


async def _catch_up(
    run: _Run,
    plan: ObjectPlan,
    item: ObjectReconcile,
    catch_up: CatchUp,
    tally: Tally,
    done: ReadPosition,
) -> None:
    """Records changed since the snapshot started, written again with every reconciled field
    (an older read of theirs may still be on its way to Amplitude, so the digest cannot
    tell), and the deleted ones as deletes; checkpointed at ``done``, the snapshot's end."""
    assert run.checkpoint is not None
    if run.progress is not None:
        run.progress.catching_up(plan.sfdc_object)
    rounds = catch_up.rounds()
    async with contextlib.aclosing(rounds):  # its page reader stops however this ends
        async for records in rounds:
            live = [r for r in records if not is_deleted(r)]
            envelopes = _envelopes(run, plan, live, "rest", tally, every_field=True)
            now_ms = int(time.time() * 1000)
            deleted = (deleted_envelope(plan, r, now_ms=now_ms) for r in records if is_deleted(r))
            envelopes += [envelope for envelope in deleted if envelope is not None]
            # Before any is written: a resumed run writes again what this round was writing.
            run.checkpoint.save(plan, done, catch_up)
            await run.write(plan.sfdc_object, envelopes)
            item.caught_up += len(envelopes)
            catch_up.track(records)
            run.checkpoint.save(plan, done, catch_up)


def _envelopes(
    run: _Run,
    plan: ObjectPlan,
    records: Sequence[dict[str, Any]],
    source: Source,
    tally: Tally,
    *,
    every_field: bool = False,
) -> list[ChangeEnvelope]:
    now_ms = int(time.time() * 1000)
    digests = None if every_field else run.digests
    found = (
        differing_envelope(plan, record, digests, source=source, now_ms=now_ms, tally=tally)
        for record in records
    )
    return [envelope for envelope in found if envelope is not None]


def exclusive(checkpoint: Path) -> contextlib.AbstractContextManager[None]:
    """One reconcile per checkpoint at a time, across processes (an advisory lock file)."""
    running = "the service's scheduled one, or another sfamp reconcile"
    return checkpoint_lock.exclusive(checkpoint, "reconcile", running=running)
