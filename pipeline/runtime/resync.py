"""Object re-syncs: every record of an object read again and written to Kafka as full records.

A re-sync answers a ``GAP_OVERFLOW`` (or a wildcard record id) and a stored replay id
Salesforce no longer retains. The request is first recorded in ``sfamp.replay`` (key
``resync:<Object>``) and removed by a tombstone only when the re-sync finished, so a crash
mid-way restarts it on the next subscription (:class:`~pipeline.runtime.ingest.IngestPump`
starts the stored requests once it is subscribed, so nothing between "read" and
"subscribed" can fall through).

Its snapshot rows are not in read order with the events (a slow page can land after a
newer event); the catch-up rounds that end it (shared with ``sfamp backfill``) re-send
every record whose read differs from the one written, until a round finds none, so the
last word in Kafka is current.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.errors import (
    KafkaError,
    ReplayIdExpiredError,
    SalesforceError,
    SfampError,
    UnreadableFieldsError,
)
from pipeline.kafka.producer import ChangeProducer, Record
from pipeline.kafka.records import ReplayMark, ResyncRequest
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.backfill import ReadOptions, begin_catch_up, read_batches, snapshot_fields
from pipeline.runtime.backfill.jobs import forget_unsaved_job
from pipeline.runtime.cadence import now_ms
from pipeline.runtime.hidden_fields import fields_hidden, fields_shown
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.retry import Backoff
from pipeline.runtime.salesforce_reads import SchemaCache, refuse_unreadable
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.bulk import BulkQuery
from pipeline.salesforce.channels import LATEST
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.envelope import ChangeEnvelope, Source, encode
from pipeline.transform.reads import envelope_from_record, stamped_envelope
from pipeline.transform.schema import ObjectSchema

log = structlog.get_logger(__name__)


class Resyncs:
    """The re-syncs of one ingest pump: at most one running per object, a newer request
    read again after it."""

    def __init__(
        self,
        holder: MappingHolder,
        salesforce: SalesforceClient,
        producer: ChangeProducer,
        topics: TopicNames,
        schemas: SchemaCache,
        state: ServiceState,
        metrics: Metrics,
    ) -> None:
        self.holder = holder
        self.state = state
        self.metrics = metrics
        self._salesforce = salesforce
        self._rest = salesforce.rest
        self._producer = producer
        self._topics = topics
        self._schemas = schemas
        self._running: dict[str, asyncio.Task[None]] = {}
        self._rerun: dict[str, ResyncRequest] = {}
        self._answering: dict[str, ResyncRequest] = {}  # what each running re-sync answers
        self.done = 0
        self.read_options = ReadOptions()  # REST or Bulk by record count, as a backfill

    async def cancel_all(self) -> None:
        """Stop every running re-sync; their requests stay in ``sfamp.replay``."""
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _change(self, envelope: ChangeEnvelope) -> Record:
        return (self._topics.changes(envelope.object), envelope.kafka_key, encode(envelope))

    async def on_replay_expired(self, exc: ReplayIdExpiredError, objects: list[str]) -> None:
        """Salesforce dropped the events after our replay id: start fresh and read everything."""
        log.error(
            "cdc_replay_id_expired",
            channel=exc.channel,
            replay_id=exc.replay_id,
            reason=str(exc),
            objects=objects,
            action="subscribing from the newest event and re-syncing the objects",
        )
        now = now_ms()
        records: list[Record] = [
            (self._topics.replay, *ResyncRequest(obj, "replay_id_expired", now).encode())
            for obj in objects
        ]
        records.append((self._topics.replay, *ReplayMark(exc.channel, LATEST, now).encode()))
        await self._producer.send_all(records)

    def start(self, request: ResyncRequest) -> None:
        """Run the re-sync ``request`` asks for, or read again after the running one."""
        obj = request.sfdc_object
        running = self._running.get(obj)
        if running is not None and not running.done():
            # A newer request (another overflow) must not be answered by an older read. The
            # same request again (every resubscription restarts the stored ones) is already
            # being answered: reading the object again for it could go on forever.
            if request.requested_at_ms > self._answering[obj].requested_at_ms:
                self._rerun[obj] = request
            return
        self._answering[obj] = request
        self.state.resyncs.append(
            {
                "object": obj,
                "cause": request.cause,
                "requested_at_ms": request.requested_at_ms,
                "status": "running",
            }
        )
        self.metrics.resyncs.labels(obj, request.cause).inc()
        task = asyncio.create_task(self._resync(request), name=f"resync {obj}")
        task.add_done_callback(self._resync_ended)
        self._running[obj] = task

    def _resync_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # Not expected (errors are retried inside); say so loudly. The request stays in
        # sfamp.replay, so the next (re)subscription starts it again.
        log.error("resync_crashed", task=task.get_name(), error=repr(task.exception()))

    async def _resync(self, request: ResyncRequest) -> None:
        obj = request.sfdc_object
        backoff = Backoff(first=2.0, ceiling=120.0)
        while True:
            try:
                written = await self._read_into_kafka(obj)
                newer = self._rerun.pop(obj, None)
                if newer is not None:
                    request = self._answering[obj] = newer  # it may postdate our read
                    continue
                key, _ = request.encode()
                await self._producer.send(self._topics.replay, key, None)  # done: tombstone
                newer = self._rerun.pop(obj, None)
                if newer is None:
                    break
                # Requested while the tombstone was written, which removed its record too:
                # record it again, then answer it.
                await self._producer.send(self._topics.replay, *newer.encode())
                request = self._answering[obj] = newer
            except (SfampError, KafkaError, AssertionError) as exc:
                delay = backoff.next()
                self._resync_failed(request, exc)
                log.error("resync_failed", object=obj, reason=str(exc), retry_in=round(delay, 1))
                await asyncio.sleep(delay)
        self.done += 1
        self._mark_resync_done(request, written)
        log.warning("resync_done", object=obj, records=written, cause=request.cause)

    async def _read_into_kafka(self, sfdc_object: str) -> int:
        """Every record of the object as full envelopes, then the records changed meanwhile.

        The snapshot may reach Kafka after a newer change event was already flushed;
        catch-up rounds (``SystemModstamp`` at or after the snapshot's start, shared
        with ``sfamp backfill``, through ``queryAll``) rewrite every record whose read
        differs from the one written (deleted ones as deletes), so the last word in
        Kafka is always current.
        """
        config = self.holder.current
        schema = await self._whole_record_schema(config, sfdc_object)
        fields = snapshot_fields(config, sfdc_object, schema)
        catch_up = await begin_catch_up(
            self._rest, sfdc_object, fields, meaning=(config, schema), recycle_bin=True
        )
        bulk = BulkQuery(self._rest)
        found: list[str] = []  # the Bulk job, once complete
        batches = read_batches(
            self._salesforce, bulk, schema, fields, where=None, start=None,
            options=self.read_options, on_job=found.append,
        )  # fmt: skip
        written = 0
        if catch_up is not None:  # ahead of the snapshot: a live read lands after them
            async with contextlib.aclosing(catch_up.deleted_before()) as deleted_pages:
                async for deleted in deleted_pages:
                    written += await self._flush_batch(
                        [self._change(_binned_envelope(sfdc_object, r)) for r in deleted]
                    )
                    catch_up.track(deleted)  # no round writes them again
        try:
            # Closed before the job's delete, however the loop ends: its page reader stops.
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    records = batch.records
                    written += await self._flush_batch(
                        [self._change(_full_envelope(sfdc_object, r, "bulk")) for r in records]
                    )
                    if catch_up is not None:
                        catch_up.read_again_if_binned(records)
                        catch_up.track(records)
        finally:  # read, failed or stopped: a retry reads in a new job
            await forget_unsaved_job(bulk, found[-1] if found else None, None)
        if catch_up is not None:
            async with contextlib.aclosing(catch_up.rounds()) as rounds:
                async for changed in rounds:
                    written += await self._flush_batch(
                        [self._change(_full_envelope(sfdc_object, r, "rest")) for r in changed]
                    )
                    catch_up.track(changed)
        return written

    async def _whole_record_schema(self, config: MappingConfig, sfdc_object: str) -> ObjectSchema:
        """A fresh describe, and proof that it lets us select every mapped field.

        Field-level security hides a field from describe and from SOQL. A snapshot
        without it would look whole and say nothing about it; refusing instead keeps
        every group's property as it is, and says why, until read access is granted.
        Described afresh on every attempt, so a re-sync resumes once it is.
        """
        self._schemas.forget()
        await self._schemas.ensure([sfdc_object])
        schema = self._schemas.cached(sfdc_object)
        if schema is None:
            raise SalesforceError(f"no describe for {sfdc_object}")
        refuse_unreadable(config, sfdc_object, schema)
        return schema

    async def _flush_batch(self, batch: list[Record]) -> int:
        if batch:
            await self._producer.send_all(batch)
        return len(batch)

    def _mark_resync_done(self, request: ResyncRequest, written: int) -> None:
        for entry in reversed(self.state.resyncs):
            if entry["object"] == request.sfdc_object and entry["status"] == "running":
                entry.update(status="done", records=written, finished_at_ms=now_ms())
                entry.pop("error", None)
                break
        fields_shown(self.state, self.metrics, request.sfdc_object)

    def _resync_failed(self, request: ResyncRequest, exc: Exception) -> None:
        """Say why in /status; for unreadable fields also in a metric and a log line of its own."""
        for entry in reversed(self.state.resyncs):
            if entry["object"] == request.sfdc_object and entry["status"] == "running":
                entry["error"] = str(exc)
                break
        if not isinstance(exc, UnreadableFieldsError):
            return
        fields_hidden(self.state, self.metrics, exc)
        log.error(
            "salesforce_fields_unreadable",
            object=exc.sfdc_object,
            fields=exc.fields,
            permission="field-level security: Read Access",
            action="re-sync waits; no property is unset meanwhile",
            reason=str(exc),
        )


def _binned_envelope(sfdc_object: str, record: Mapping[str, Any]) -> ChangeEnvelope:
    """A record the recycle bin holds, as a delete ordered before every live read: deliver
    keeps the latest commit per property across the records of a group, so at its own
    stamp it would land over a live record that shares the group (a group name field
    records share). Its own record's changes held with it still come first (deliver
    places a read after them)."""
    return envelope_from_record(sfdc_object, record, source="rest", now_ms=0)


def _full_envelope(sfdc_object: str, record: Mapping[str, Any], source: Source) -> ChangeEnvelope:
    """A re-sync's row (``IsDeleted`` rows become deletes), ordered at its ``SystemModstamp``;
    the catch-up rounds correct it when it was stale (see the module docstring)."""
    return stamped_envelope(sfdc_object, record, source=source, now_ms=now_ms())
