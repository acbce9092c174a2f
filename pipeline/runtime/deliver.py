"""The deliver pump: ``sfamp.changes.*`` → transform → coalesce → Amplitude, on the cadence.

It is one member of the Kafka consumer group ``settings.kafka.consumer_group``
and never commits an offset before everything read up to it is settled: sent
to Amplitude and accepted, or written to ``sfamp.dlq`` with a reason. So:

* a failed flush (Amplitude down past its retry deadline, Salesforce
  unreachable for a lookup) commits nothing; the pump forgets what it held,
  rewinds to the committed offsets, and retries soon after;
* a rebalance forgets what the pump held too, and every partition it keeps or
  gains restarts from its committed offset. Whoever owns a partition next
  re-reads what was not committed. Replays only repeat ``$set`` / ``$unset``,
  which is harmless.

A flush keeps the group membership however long it takes (Amplitude's 429s
can stretch it over minutes): the consumer holds its partitions and keeps
polling meanwhile. If a rebalance lands during a flush, the partitions the
member kept are committed when Amplitude has accepted the flush, and a flush
whose partitions all went to another member stops early and logs
``revoked``: the new owner re-reads it.

Group names missing from an update (a group name field other than ``Id``) and
records named by gap events are read from Salesforce at flush time, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from pipeline.amplitude import AmplitudeClient, DeliveryReport
from pipeline.config.mapping import MappingConfig, ObjectMapping
from pipeline.config.settings import Settings
from pipeline.errors import (
    AmplitudeError,
    EnvelopeError,
    KafkaError,
    SalesforceError,
    SalesforceRequestError,
)
from pipeline.kafka.consumer import ChangesConsumer, Partition, Record
from pipeline.kafka.envelope import ChangeEnvelope, decode, encode
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry, DlqReason, dlq_id
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.cadence import FlushSchedule, now_ms, utc_now
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.retry import Backoff
from pipeline.runtime.salesforce_reads import RecordReads, RestReads, SchemaCache, read_records
from pipeline.runtime.state import FlushResult, ServiceState
from pipeline.transform.apply import (
    NeedsLookup,
    NeedsReread,
    NeedsResync,
    NothingToDo,
    Outcome,
    PropertyChanges,
    changes_for,
    changes_for_config,
)
from pipeline.transform.cdc import deleted_envelope, envelope_from_record
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.plan import plan_for

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
_T = TypeVar("_T")
# Far above any real flush: the pump flushes early at settings.runtime.max_pending_groups.
_COALESCER_CAPACITY = 1 << 40


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a change came from, for DLQ entries."""

    topic: str
    partition: int
    offset: int
    key: str


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A change that needs Salesforce data before it names its group (resolved at flush)."""

    envelope: ChangeEnvelope
    mapping: ObjectMapping | None  # None: a gap re-read, for every mapping of the object
    fields: tuple[str, ...]
    full_record: bool
    source: _Source


@dataclass
class _Window:
    """What the pump holds between two flushes; thrown away whole on failure or rebalance."""

    coalescer: Coalescer = field(default_factory=lambda: Coalescer(_COALESCER_CAPACITY))
    offsets: dict[Partition, int] = field(default_factory=dict)
    lookups: list[_Lookup] = field(default_factory=list)
    dlq: list[DlqEntry] = field(default_factory=list)
    changes: int = 0

    @property
    def empty(self) -> bool:
        return not self.offsets


@dataclass
class _Flushing:
    """A window being flushed, and what rebalances took from it meanwhile."""

    window: _Window
    member_id: str
    lost: set[Partition] = field(default_factory=set)
    rebalanced: bool = False
    reassigned: asyncio.Event = field(default_factory=asyncio.Event)
    revoked: asyncio.Event = field(default_factory=asyncio.Event)

    def assigned(self, partitions: set[Partition], member_id: str) -> None:
        """Another member may own, or have owned, what this member no longer holds."""
        read = set(self.window.offsets)
        # A new member id means the group dropped this member: it kept nothing.
        self.lost |= read - partitions if member_id == self.member_id else read
        self.rebalanced = True
        self.reassigned.set()
        if read and self.lost >= read:
            self.revoked.set()


class DeliverPump:
    """Consumes change envelopes and flushes coalesced group updates on the cadence."""

    def __init__(
        self,
        settings: Settings,
        holder: MappingHolder,
        amplitude: AmplitudeClient,
        producer: ChangeProducer,
        salesforce: RestReads,
        state: ServiceState,
        metrics: Metrics,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.state = state
        self.metrics = metrics
        self._amplitude = amplitude
        self._producer = producer
        self._salesforce = salesforce
        self._schemas = SchemaCache(salesforce)
        self._clock = clock
        self._topics = TopicNames(settings.kafka.topic_prefix)
        self._max_groups = settings.runtime.max_pending_groups
        self._window = _Window()
        self._generation = 0  # bumped whenever the window is thrown away
        self._schedule = FlushSchedule(holder.current.sync_cadence, clock())
        self._stopping = asyncio.Event()
        self._consumer: ChangesConsumer | None = None
        self._flushing: _Flushing | None = None
        self._stop_requested_at: float | None = None
        self._retry = Backoff(first=2.0, ceiling=60.0)
        self._must_rewind = False
        self.flushes = 0

    # -- lifecycle -------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking new messages; an in-flight flush may finish (the caller bounds it)."""
        self._stop_requested_at = time.monotonic()
        self._stopping.set()

    async def run(self) -> None:
        consumer = ChangesConsumer(self.settings.kafka)
        await consumer.start(self._topics.changes_pattern, self)
        self._consumer = consumer
        try:
            self._publish_schedule()
            while not self._stopping.is_set():
                await self._step(consumer)
        finally:
            self._consumer = None
            self.state.consumer_joined = False
            await consumer.stop(within=self._stop_budget())

    def _stop_budget(self) -> float:
        """What is left of the drain budget for leaving the group (all of it after a crash)."""
        budget = self.settings.runtime.drain_timeout_seconds
        if self._stop_requested_at is not None:
            budget -= time.monotonic() - self._stop_requested_at
        return max(0.5, budget - 0.5)

    # -- the group moves partitions -----------------------------------------

    async def partitions_revoked(self, revoked: set[Partition]) -> None:
        self.forget("rebalance")

    async def partitions_assigned(self, assigned: set[Partition]) -> None:
        flushing, consumer = self._flushing, self._consumer
        if flushing is not None and consumer is not None:
            flushing.assigned(assigned, consumer.member_id)
        await self.rewind(assigned)
        self.state.consumer_joined = True
        self.state.partitions = _names(assigned)
        log.info(
            "deliver_partitions_assigned",
            partitions=_names(assigned),
            during_flush=flushing is not None,
        )

    # -- one turn of the loop ---------------------------------------------

    async def _step(self, consumer: ChangesConsumer) -> None:
        self.state.beat("deliver")
        if self._must_rewind:
            try:
                await self.rewind(consumer.assignment())
                self._must_rewind = False
            except KafkaError as exc:
                log.error("deliver_rewind_failed", reason=str(exc), retrying=True)
                await asyncio.sleep(1.0)
            return
        self._schedule.change(self.holder.current.sync_cadence)
        now = self._clock()
        wait = min(1.0, max(0.0, (self._schedule.next_at - now).total_seconds()))
        try:
            batch = await consumer.fetch(
                timeout_seconds=max(wait, 0.01), max_records=5000, until=self._stopping
            )
        except KafkaError as exc:
            async with consumer.held():
                await self._failed(exc)
            return
        if self._stopping.is_set():
            return  # what this fetch brought is read again at the next start
        async with consumer.held():  # however long this takes, the member stays in its group
            await self._process(batch)
        self._publish_schedule()
        self._observe_lag(consumer)

    async def _process(self, batch: Mapping[Partition, list[Record]]) -> None:
        try:
            await self._take_all(batch)
            if self._schedule.due(self._clock()) or self._full():
                await self.flush()
        except (AmplitudeError, SalesforceError, KafkaError) as exc:
            await self._failed(exc)

    def _full(self) -> bool:
        return self._window.coalescer.pending_groups + len(self._window.lookups) >= self._max_groups

    async def _take_all(self, batch: Mapping[Partition, list[Record]]) -> None:
        if not any(batch.values()):
            return
        generation = self._generation
        config = self.holder.current
        mapped = frozenset(config.objects)
        objects = {self._topics.object_of(tp.topic) for tp in batch}
        await self._schemas.ensure(o for o in objects if o in mapped)
        if generation != self._generation:
            return  # rewound while describing: these records will be fetched again
        for tp, records in batch.items():
            for record in records:
                self._take(tp, record, config, mapped)
                if self._full():
                    await self.flush()
                    if generation != self._generation:
                        return  # rewound during the flush: the rest comes again
        self.state.pending_groups = self._window.coalescer.pending_groups
        self.metrics.pending_groups.set(self.state.pending_groups)

    def _take(
        self,
        tp: Partition,
        record: Record,
        config: MappingConfig,
        mapped: frozenset[str],
    ) -> None:
        window = self._window
        window.offsets[tp] = record.offset + 1
        try:
            envelope = decode(record.value)
        except EnvelopeError as exc:
            self._to_dlq("malformed", str(exc), _source_of(record), _text(record.value))
            return
        if envelope.object not in mapped:
            return  # an object no longer mapped
        window.changes += 1
        add = window.coalescer.add
        schema = self._schemas.cached(envelope.object)
        for mapping, outcome in changes_for_config(envelope, config, schema):
            if type(outcome) is PropertyChanges:
                add(outcome)
            else:  # the rare cases: build the source reference only for them
                self._settle(envelope, mapping, outcome, _source_of(record))

    def _settle(
        self, envelope: ChangeEnvelope, mapping: ObjectMapping, outcome: Outcome, source: _Source
    ) -> None:
        window = self._window
        if isinstance(outcome, PropertyChanges):
            window.coalescer.add(outcome)
        elif isinstance(outcome, NeedsLookup):
            fields = (*outcome.fields, mapping.group_name_field)
            window.lookups.append(_Lookup(envelope, mapping, fields, outcome.full_record, source))
        elif isinstance(outcome, NeedsReread):
            if not any(item.source == source for item in window.lookups):
                window.lookups.append(_Lookup(envelope, None, (), True, source))
        elif isinstance(outcome, NeedsResync):
            # Ingest re-syncs objects; an overflow marker here is only informative.
            log.info("deliver_saw_overflow", object=outcome.sfdc_object, reason=outcome.reason)
        elif isinstance(outcome, NothingToDo):
            pass

    def _to_dlq(
        self,
        reason: DlqReason,
        detail: str,
        source: _Source,
        payload: Any,
        window: _Window | None = None,
    ) -> None:
        (window or self._window).dlq.append(
            DlqEntry(
                id=dlq_id(source.topic, source.partition, source.offset),
                reason=reason,
                detail=detail,
                at_ms=now_ms(),
                key=source.key,
                payload=payload,
                source_topic=source.topic,
                source_partition=source.partition,
                source_offset=source.offset,
            )
        )

    # -- the flush ----------------------------------------------------------

    async def flush(self) -> FlushResult:
        """Settle everything held: lookups, Amplitude, DLQ, then commit the offsets."""
        started = time.monotonic()
        window, self._window = self._window, _Window()
        member_id = self._consumer.member_id if self._consumer is not None else ""
        flushing = self._flushing = _Flushing(window, member_id)
        try:
            settled = await self._unless_revoked(flushing, self._settle_window(window))
            committed = await self._commit(flushing) if settled is not None else {}
        finally:
            self._flushing = None
        updates, report = settled or ([], DeliveryReport())
        result = FlushResult(
            at=self._clock(),
            ok=True,
            groups=len(updates),
            requests=report.requests,
            rejected=len(report.rejected),
            changes=window.changes,
            duration_seconds=round(time.monotonic() - started, 3),
            error=_flush_note(flushing, stopped=settled is None, committed=committed),
        )
        self._flushed(result, report, dlq=len(window.dlq), flushing=flushing, committed=committed)
        return result

    async def _settle_window(self, window: _Window) -> tuple[list[GroupUpdate], DeliveryReport]:
        await self._resolve_lookups(window)
        updates = window.coalescer.drain()
        report = await self._amplitude.send(updates) if updates else DeliveryReport()
        for rejection in report.rejected:
            self._reject(window, rejection.update.to_identification(), rejection)
        await self._write_dlq(window.dlq)
        return updates, report

    @staticmethod
    async def _unless_revoked(flushing: _Flushing, work: Coroutine[Any, Any, _T]) -> _T | None:
        """The work's result, or None once the group gave every partition it is for away."""
        task = asyncio.ensure_future(work)
        revoked = asyncio.ensure_future(flushing.revoked.wait())
        try:
            await asyncio.wait({task, revoked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            revoked.cancel()
            if not task.done():
                task.cancel()  # the new owner re-reads and re-sends all of it
                await asyncio.wait([task])
        return None if task.cancelled() else task.result()

    async def _resolve_lookups(self, window: _Window) -> None:
        by_object: dict[str, list[_Lookup]] = {}
        for item in window.lookups:
            by_object.setdefault(item.envelope.object, []).append(item)
        config = self.holder.current
        for sfdc_object, items in by_object.items():
            schema = self._schemas.cached(sfdc_object)
            fields = {name for item in items for name in item.fields}
            for mapping in config.for_object(sfdc_object):
                fields |= {mapping.group_name_field, *plan_for(mapping, schema).read_fields}
            ids = (item.envelope.record_id for item in items)
            try:
                reads = await read_records(self._salesforce, sfdc_object, ids, sorted(fields))
            except SalesforceRequestError as exc:
                # Salesforce refuses this read for good: park the changes, go on with the rest.
                for item in items:
                    self._to_dlq(
                        "unresolved",
                        f"Salesforce refused the lookup of {sfdc_object}: {exc}",
                        item.source,
                        _envelope_payload(item.envelope),
                        window,
                    )
                continue
            for item in items:
                self._resolve_read(item, reads, config, window)
        window.lookups = []

    def _resolve_read(
        self, item: _Lookup, reads: RecordReads, config: MappingConfig, window: _Window
    ) -> None:
        record_id = item.envelope.record_id
        problem = reads.refused.get(record_id)
        if problem is None:
            self._resolve(item, reads.found.get(record_id), config, window)
        else:  # a bad id fails alone: its neighbours in the same read are resolved
            self._to_dlq(
                "malformed", problem, item.source, _envelope_payload(item.envelope), window
            )

    def _resolve(
        self,
        item: _Lookup,
        record: Mapping[str, Any] | None,
        config: MappingConfig,
        window: _Window,
    ) -> None:
        envelope, schema = item.envelope, self._schemas.cached(item.envelope.object)
        if item.mapping is None:  # a gap: the record as it is now replaces the event
            read_at = now_ms()
            alive = record is not None and record.get("IsDeleted") is not True
            full = (
                envelope_from_record(envelope.object, record, source="rest", now_ms=read_at)
                if record is not None and alive
                else deleted_envelope(
                    envelope.object, envelope.record_id, source="rest", now_ms=read_at
                )
            )
            for mapping, outcome in changes_for_config(full, config, schema):
                self._settle_resolved(outcome, item, mapping, window)
            return
        if record is None:
            self._to_dlq(
                "unresolved",
                f"{envelope.object} {envelope.record_id} is gone from Salesforce; "
                f"its {item.mapping.group_type} group cannot be named",
                item.source,
                _envelope_payload(envelope),
                window,
            )
            return
        if item.full_record:
            outcome = changes_for(envelope, item.mapping, schema, full_record=record)
        else:
            name = record.get(item.mapping.group_name_field)
            outcome = changes_for(
                envelope, item.mapping, schema, group_value="" if name is None else str(name)
            )
        self._settle_resolved(outcome, item, item.mapping, window)

    def _settle_resolved(
        self, outcome: Outcome, item: _Lookup, mapping: ObjectMapping, window: _Window
    ) -> None:
        if isinstance(outcome, PropertyChanges):
            window.coalescer.add(outcome)
        elif not isinstance(outcome, NothingToDo):
            self._to_dlq(
                "unresolved",
                f"still incomplete after reading Salesforce ({type(outcome).__name__}) "
                f"for {mapping.group_type}",
                item.source,
                _envelope_payload(item.envelope),
                window,
            )

    def _reject(self, window: _Window, identification: dict[str, Any], rejection: Any) -> None:
        key = f"{identification['group_type']}:{identification['group_value']}"
        window.dlq.append(
            DlqEntry(
                id=f"rejected:{key}:{now_ms()}",
                reason="rejected",
                detail=f"Amplitude answered {rejection.status}: {rejection.reason}",
                at_ms=now_ms(),
                key=key,
                payload=identification,
            )
        )

    async def _write_dlq(self, entries: list[DlqEntry]) -> None:
        if not entries:
            return
        await self._producer.send_all([(self._topics.dlq, *entry.encode()) for entry in entries])
        for entry in entries:
            self.metrics.dlq_messages.labels(entry.reason).inc()
            log.warning(
                "dlq_written", reason=entry.reason, key=entry.key, id=entry.id, detail=entry.detail
            )

    async def _commit(self, flushing: _Flushing) -> dict[Partition, int]:
        """Commit the partitions this member held throughout; in a rebalance, once it settles."""
        consumer = self._consumer
        committed: dict[Partition, int] | None = {}
        for _ in range(2):
            flushing.reassigned.clear()
            kept = {tp: n for tp, n in flushing.window.offsets.items() if tp not in flushing.lost}
            committed = await consumer.commit(kept) if kept and consumer is not None else {}
            if committed is not None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flushing.reassigned.wait(), timeout=self._rejoin_seconds)
        if committed and flushing.rebalanced and consumer is not None:
            consumer.seek(committed)  # the re-assignment rewound them to before this flush
        return committed or {}

    @property
    def _rejoin_seconds(self) -> float:
        return 2 * self.settings.kafka.consumer_session_timeout_seconds

    def _flushed(
        self,
        result: FlushResult,
        report: DeliveryReport,
        *,
        dlq: int,
        flushing: _Flushing,
        committed: Mapping[Partition, int],
    ) -> None:
        self.flushes += 1
        now = self._clock()
        self._schedule.flushed(now)
        self._retry.reset()
        self.state.last_flush = result
        self.state.last_successful_flush = now
        self.state.pending_groups = 0
        self.metrics.flush_duration.observe(result.duration_seconds)
        self.metrics.flush_groups.set(result.groups)
        self.metrics.last_successful_flush.set(now.timestamp())
        self.metrics.pending_groups.set(0)
        for status, count in report.statuses.items():
            self.metrics.amplitude_requests.labels(status).inc(count)
        for (group_type, prop), count in report.truncated.items():
            self.metrics.truncated_values.labels(group_type, prop).inc(count)
        log.log(
            logging.INFO if result.changes or result.groups else logging.DEBUG,
            "flush",
            changes=result.changes,
            groups=result.groups,
            requests=result.requests,
            retries=report.retries,
            rejected=result.rejected,
            dlq=dlq,
            bytes=report.bytes_sent,
            seconds=result.duration_seconds,
            committed=len(committed) == len(flushing.window.offsets),
            **({"revoked": _names(flushing.lost)} if flushing.lost else {}),
            **({"stopped_early": True} if flushing.revoked.is_set() else {}),
            next_flush_at=self._schedule.next_at.isoformat(),
        )

    async def _failed(self, exc: Exception) -> None:
        """Nothing of this window is committed: forget it, rewind, retry after a pause."""
        delay = self._retry.next()
        self.metrics.flush_failures.inc()
        self.state.last_flush = FlushResult(at=self._clock(), ok=False, error=str(exc))
        log.error(
            "flush_failed",
            error=type(exc).__name__,
            reason=str(exc),
            retry_in_seconds=round(delay, 1),
            committed=False,
        )
        self.forget("failure")
        consumer = self._consumer
        if consumer is not None:
            try:
                await self.rewind(consumer.assignment())
            except KafkaError as rewind_error:
                # Consuming on from the old position would skip the dropped window.
                self._must_rewind = True
                log.error("deliver_rewind_failed", reason=str(rewind_error), retrying=True)
        self._schedule.retry_after(self._clock(), delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    # -- rebalance and rewind ---------------------------------------------------

    def forget(self, why: str) -> None:
        """Drop everything held since the last commit; Kafka still has it."""
        if not self._window.empty:
            log.info("deliver_window_dropped", why=why, changes=self._window.changes)
        self._window = _Window()
        self._generation += 1
        self.state.pending_groups = 0

    async def rewind(self, partitions: set[Partition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        self._generation += 1  # a batch fetched before the seek must not be taken
        await consumer.rewind(partitions)

    # -- observability ------------------------------------------------------------

    def _publish_schedule(self) -> None:
        self.state.next_flush_at = self._schedule.next_at

    def _observe_lag(self, consumer: ChangesConsumer) -> None:
        """Messages in the assigned partitions that this pump has not read yet."""
        lag = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self._window.offsets.get(tp)
            if highwater is not None and position is not None:
                lag += max(0, highwater - position)
        self.metrics.consumer_lag.set(lag)


def _source_of(record: Record) -> _Source:
    return _Source(record.topic, record.partition, record.offset, _text(record.key))


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", errors="replace")


def _envelope_payload(envelope: ChangeEnvelope) -> str:
    return encode(envelope).decode()


def _flush_note(
    flushing: _Flushing, *, stopped: bool, committed: Mapping[Partition, int]
) -> str | None:
    lost = ", ".join(_names(flushing.lost))
    if stopped:
        return f"stopped early: the group gave {lost} to another member, which reads them again"
    if lost:
        return f"the group gave {lost} to another member during the flush; it reads them again"
    if flushing.window.offsets and not committed:
        return "offsets not committed: the group was rebalancing; they are read again"
    return None


def _names(partitions: set[Partition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
