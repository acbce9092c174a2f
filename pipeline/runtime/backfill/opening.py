"""Opening an object of a backfill: what to read and from where, its catch-up, and its
snapshot's read begun.

A backfill of several objects opens the next ones (up to
:data:`~pipeline.runtime.backfill.ahead.OBJECTS_AHEAD`), and begins their reads, while
it still reads the one before (:func:`begin_object`, in turn by
:func:`~pipeline.runtime.backfill.ahead.in_turn`): Salesforce then works on their Bulk
query jobs (``UploadComplete`` → ``InProgress`` → ``JobComplete``, seconds to minutes on
a large object) while the records before them are delivered, instead of after. No page
is read before the object's turn (no memory held for it, no REST query cursor left to
expire), and nothing of it is sent before the object before it has ended: what reaches
Amplitude keeps the order of the mapping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import orjson
import structlog

from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.runtime.backfill.ahead import ReadAhead
from pipeline.runtime.backfill.catch_up import CatchUp, begin_catch_up, catch_up_for
from pipeline.runtime.backfill.checkpoint import ObjectCheckpoint
from pipeline.runtime.backfill.deliver import BackfillRun, ObjectRun
from pipeline.runtime.backfill.jobs import forget_unsaved_job
from pipeline.runtime.backfill.meaning import MODSTAMP, ReadMeaning
from pipeline.runtime.backfill.read import BulkWindowReads, open_object, read_batches
from pipeline.runtime.backfill.report import ObjectSummary
from pipeline.runtime.backfill.stamps import parse_stamp
from pipeline.runtime.salesforce_reads import fields_to_read, refuse_unreadable
from pipeline.transform.schema import ObjectSchema, schema_from_describe

log = structlog.get_logger(__name__)


async def begin_object(run: BackfillRun, item: ObjectSummary) -> ObjectRun | None:
    """Open ``item``'s object and begin its snapshot's read (``obj.reader``); None when a
    resumed run had finished it.

    Raises what the describe, the count or the catch-up's start raise
    (:class:`~pipeline.errors.SalesforceError`); the read's own errors come out of
    ``obj.reader``. Whoever gets an object closes its reader however its turn ends,
    or calls :func:`abandon` when the turn never comes.
    """
    obj = await _open_object(run, item)
    if obj is not None:
        # Nothing is awaited from here on: a cancelled opening never leaves a reader behind.
        batches = read_batches(
            run.sf, run.bulk, obj.schema, obj.fields, where=run.where, start=obj.start,
            options=run.options, total=obj.total, on_job=obj.found_job, turn=obj.turn,
        )  # fmt: skip
        obj.reader = ReadAhead(batches)
    return obj


async def abandon(run: BackfillRun, obj: ObjectRun) -> None:
    """End an object's read when its turn never came or the run stopped or failed in it:
    the read is stopped and a Bulk job no checkpoint names is aborted and deleted."""
    if obj.reader is not None:
        await obj.reader.aclose()
    await forget_unsaved_job(run.bulk, obj.job_id, obj.saved_job)


async def _open_object(run: BackfillRun, item: ObjectSummary) -> ObjectRun | None:
    """What to read for the object and from where; None when a resumed run finished it."""
    sfdc_object = item.sfdc_object
    # A fresh run begins a catch-up; every run counts the records (the progress's total,
    # a resumed REST read's too): both asked beside the describe.
    fresh = run.resume_from is None
    opening = await open_object(
        run.sf, sfdc_object, run.where, clock=fresh and run.checkpoint is not None
    )
    schema = schema_from_describe(opening.describe)
    if run.sent is not None:
        run.sent.learn(schema)
    mapped = fields_to_read(run.config, sfdc_object, schema)
    mappings = run.config.for_object(sfdc_object)
    fingerprint = _fingerprint(mappings, mapped, run.where)
    saved = None if run.resume_from is None else run.resume_from.entry(sfdc_object, fingerprint)
    if saved is not None and saved.complete:
        item.already_done = item.finished = True
        log.info("backfill_object_already_done", object=sfdc_object)
        return None
    # Checked before the run too; a field hidden since is not silently left out.
    refuse_unreadable(run.config, sfdc_object, schema)
    # SystemModstamp is read too (when the object has one): catch-up orders by it.
    fields = [*mapped, MODSTAMP] if schema.field(MODSTAMP) is not None else mapped
    config = run.config.model_copy(update={"mappings": mappings})
    catch_up = await _catch_up_for(
        run, sfdc_object, fields, saved, (config, schema), opening.server_time
    )
    meaning = catch_up.meaning if catch_up is not None else None
    start = None if saved is None else saved.position
    return ObjectRun(
        item,
        schema,
        config,
        fields,
        fingerprint,
        start,
        catch_up,
        meaning or ReadMeaning(sfdc_object, config, schema),
        # A run resumed after its snapshot reads no batch: its job is still to delete.
        job_id=None if start is None else start.job_id,
        saved_job=None if start is None else start.job_id,
        total=opening.total,
    )


async def _catch_up_for(
    run: BackfillRun,
    sfdc_object: str,
    fields: list[str],
    saved: ObjectCheckpoint | None,
    meaning: tuple[MappingConfig, ObjectSchema],
    server_time: datetime | None,
) -> CatchUp | None:
    """The object's catch-up: resumed from the checkpoint, or starting now (before reading,
    at ``server_time`` when that was taken)."""
    if run.checkpoint is None:
        return None  # a dry run delivers nothing, so nothing can land out of order
    rest, where = run.sf.rest, run.where
    # A large window (a bulk load just before the backfill) is read again through Bulk.
    bulk = None if run.options.api == "rest" else BulkWindowReads(run.bulk, meaning[1], run.options)
    if saved is None or "since" not in saved.catch_up or MODSTAMP not in fields:
        return await begin_catch_up(
            rest, sfdc_object, fields, where=where, meaning=meaning, bulk=bulk, recycle_bin=True,
            server_time=server_time,
        )  # fmt: skip
    since = parse_stamp(saved.catch_up["since"])
    seen = saved.catch_up.get("seen")
    return catch_up_for(
        rest, sfdc_object, fields, since, where=where, meaning=meaning, seen=seen, bulk=bulk,
        recycle_bin=True,
    )  # fmt: skip


def unique_by_schema(mapping: ObjectMapping, schema: ObjectSchema) -> bool:
    """True when the mapping's groups are named by a field no two records share."""
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
