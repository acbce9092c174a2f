"""The deliver pump: ``sfamp.changes.*`` → transform → coalesce → Amplitude, on the cadence.

It is one member of the Kafka consumer group ``settings.kafka.consumer_group``
and never commits an offset before everything read up to it is settled: sent
to Amplitude and accepted, or written to ``sfamp.dlq`` with a reason. So:

* a failed flush (Amplitude down past its retry deadline, Salesforce unreachable
  for a lookup) commits nothing; the pump forgets what it held, rewinds to the
  committed offsets, and retries once it has read it all again (so does a flush
  halted by a mapping revision that gives its changes another meaning);
* a rebalance forgets what the pump held too, and every partition it keeps or
  gains restarts from its committed offset. Whoever owns a partition next
  re-reads what was not committed (a harmless replay of ``$set`` / ``$unset``).

A flush keeps the group membership however long it takes (Amplitude's 429s can stretch
it over minutes): the consumer holds its partitions and keeps polling meanwhile. If a
rebalance lands during a flush, the partitions the member kept are committed when
Amplitude has accepted the flush, and a flush whose partitions all went to another
member stops early and logs ``revoked``: the new owner re-reads it. A flush that loses
only some of its partitions, when they fed any of its groups, stops its requests and
sends again what the partitions it kept hold (each partition's changes coalesce apart):
the new owner of the others sends their values, and ours, retried meanwhile, could land
after its newer ones. What Amplitude had already accepted is sent twice, which is
harmless; a request already on its way may still land.

Group names missing from an update and fields a change does not carry are read from
Salesforce at flush time (:mod:`pipeline.runtime.deliver.lookups`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime

import structlog

from pipeline.amplitude import AmplitudeClient, DeliveryReport
from pipeline.amplitude.payload import to_identification
from pipeline.config.settings import Settings
from pipeline.errors import AmplitudeError, KafkaError, KafkaUnavailableError, SalesforceError
from pipeline.kafka.consumer import ChangesConsumer, Partition, Record
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.cadence import FlushSchedule, utc_now
from pipeline.runtime.deliver.lookups import resolve_lookups
from pipeline.runtime.deliver.sending import send_kept, unless, write_dead_letters
from pipeline.runtime.deliver.window import Flushing, FlushWindow, Reread, partition_names, unread
from pipeline.runtime.hidden_fields import reporting_schemas
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.reconcile.recorder import SentRecorder
from pipeline.runtime.retry import Backoff
from pipeline.runtime.salesforce_reads import RestReads
from pipeline.runtime.state import FlushResult, ServiceState
from pipeline.runtime.tasks import finish
from pipeline.transform.compiled import compiled
from pipeline.transform.group_update import GroupUpdate

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


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
        self._schemas = reporting_schemas(salesforce, state, metrics)
        self._clock = clock
        self._topics = TopicNames(settings.kafka.topic_prefix)
        self._sent = SentRecorder(producer.send_all, self._topics.sent, self._schemas)
        self._max_groups = settings.runtime.max_pending_groups
        self._window = FlushWindow()
        self._generation = 0  # bumped whenever the window is thrown away
        self._schedule = FlushSchedule(holder.current.sync_cadence, clock())
        self._stopping = asyncio.Event()
        self._consumer: ChangesConsumer | None = None
        self._flushing: Flushing | None = None
        self._stop_requested_at: float | None = None
        self._retry = Backoff(first=2.0, ceiling=60.0)
        self._must_rewind, self._reread = False, Reread()  # a rewind pending; what it dropped
        self._failed_flush: FlushResult | None = None
        # Between a revoke and the next assignment: aiokafka still reports the old one.
        self._rebalancing = False
        self.flushes = 0

    # -- lifecycle -------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking messages (a flush may finish); asked again, leave the group at once."""
        self._stop_requested_at = -math.inf if self._stopping.is_set() else time.monotonic()
        self._stopping.set()

    async def run(self) -> None:
        consumer = await self._started_consumer()
        if consumer is None:
            return  # stopped before Kafka answered
        self._consumer = consumer
        try:
            self._publish_schedule()
            while not self._stopping.is_set():
                await self._step(consumer)
        finally:
            self._consumer = None
            self.state.consumer_joined = False
            await consumer.stop(within=self._stop_budget())

    async def _started_consumer(self) -> ChangesConsumer | None:
        """The group's consumer, started; while Kafka does not answer, retried with backoff
        (like every Kafka trouble of the loop) until it does or a stop is requested."""
        while True:
            attempt = ChangesConsumer(self.settings.kafka)
            try:
                # An attempt can last the request timeout: a stop cancels it (and it closes).
                started = attempt.start(self._topics.changes_pattern, self)
                consumer = await unless(self._stopping, started)
                self._retry.reset()
                return consumer
            except KafkaUnavailableError as exc:
                delay = self._retry.next()
                self.state.beat("deliver")  # retrying is progress; a restart would not help
                retry_in = round(delay, 1)
                log.error("deliver_consumer_start_failed", reason=str(exc), retry_in=retry_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return None

    def _stop_budget(self) -> float:
        """What is left of the drain budget for leaving the group (all of it after a crash)."""
        budget = self.settings.runtime.drain_timeout_seconds
        if self._stop_requested_at is not None:
            budget -= time.monotonic() - self._stop_requested_at
        return max(0.5, budget - 0.5)

    # -- the group moves partitions -----------------------------------------

    async def partitions_revoked(self, revoked: set[Partition]) -> None:
        self._rebalancing = True
        self.forget("rebalance")

    async def partitions_assigned(self, assigned: set[Partition]) -> None:
        # From here the assignment is the new one; the rewind handles what is taken meanwhile.
        self._rebalancing = False
        flushing, consumer = self._flushing, self._consumer
        if flushing is not None and consumer is not None:
            flushing.assigned(assigned, consumer.member_id)
        self._reread.keep(assigned)
        await self.rewind(assigned)
        self.state.consumer_joined, self.state.partitions = True, partition_names(assigned)
        names, during_flush = self.state.partitions, flushing is not None
        log.info("deliver_partitions_assigned", partitions=names, during_flush=during_flush)

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
        highwaters = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
        self.metrics.consumer_lag.set(unread(highwaters, self._window.offsets))

    async def _process(self, batch: Mapping[Partition, list[Record]]) -> None:
        try:
            if not self._window.means(self.holder.current):
                await self._read_again("mapping_changed")  # the batch comes again too
                return
            await self._take_all(batch)
            read_again = self._reread.done(self._window.offsets, time.monotonic())
            if (self._schedule.due(self._clock()) and read_again) or self._full():
                await self.flush()
        except (AmplitudeError, SalesforceError, KafkaError) as exc:
            await self._failed(exc)

    def _full(self) -> bool:
        return self._window.pending_groups + len(self._window.lookups) >= self._max_groups

    async def _take_all(self, batch: Mapping[Partition, list[Record]]) -> None:
        if self._rebalancing or not any(batch.values()):
            # Fetched before a revoke: the next assignment rewinds to the committed offsets.
            return
        generation = self._generation
        config = self.holder.current
        mapped = frozenset(config.objects)
        carried = [(self._topics.object_of(tp.topic), records) for tp, records in batch.items()]
        await self._schemas.ensure_current(config, carried)
        if generation != self._generation:
            return  # rewound while describing: these records will be fetched again
        table = compiled(config)  # once per mapping revision
        schemas = {sfdc_object: self._schemas.cached(sfdc_object) for sfdc_object in mapped}
        assigned = self._consumer.assignment() if self._consumer is not None else set(batch)
        for tp, records in batch.items():
            if tp not in assigned:
                # Fetched just before a rebalance gave the partition to another member:
                # sending these could land older values after the new owner's newer ones.
                # The owner reads them from the committed offset. (A partition kept is
                # taken: once a new assignment is installed, aiokafka's fetcher drops what
                # it fetched under the old one and starts from the committed offsets.)
                continue
            taken = 0
            while taken < len(records):
                taken = self._window.take(tp, records, taken, table, schemas, self._max_groups)
                if self._full():
                    await self.flush()
                    if generation != self._generation:
                        return  # rewound during the flush: the rest comes again
        self.state.pending_groups = self._window.pending_groups
        self.metrics.pending_groups.set(self.state.pending_groups)

    # -- the flush ----------------------------------------------------------

    async def flush(self) -> FlushResult:
        """Settle everything held: lookups, Amplitude, DLQ, then commit the offsets."""
        started = time.monotonic()
        self._reread.reached(self._window.offsets)  # before the window is swapped
        window, self._window = self._window, FlushWindow()
        member_id = self._consumer.member_id if self._consumer is not None else ""
        flushing = self._flushing = Flushing(window, member_id)
        self.state.flushing_since = self._clock()  # /status: a flush that hangs shows
        answers, groups = self.metrics.amplitude_answers, window.pending_groups
        # A mapping that changes what the window means halts the flush (before it sends or
        # between requests): uncommitted, it is read again and sent as the new one means it.
        watch = asyncio.ensure_future(flushing.halt_when_stale(self.holder))
        try:
            settled = None
            if window.means(self.holder.current):
                settled = await unless(flushing.halted, self._settle_window(flushing))
            stale = flushing.stale or not window.means(self.holder.current)
            committed = await self._commit(flushing) if settled is not None and not stale else {}
        except Exception:
            self._reread.add(window.offsets)  # to read again (_failed)
            # What the failed flush held and did, for /status and its metrics (_failed).
            self._failed_flush = FlushResult(
                at=self._clock(),
                ok=False,
                groups=groups,  # held when it began (settling drains them)
                requests=self.metrics.amplitude_answers - answers,
                changes=window.changes,
                duration_seconds=round(time.monotonic() - started, 3),
            )
            raise
        finally:
            await finish(watch)
            self._flushing = self.state.flushing_since = None
        updates, report = settled or ([], DeliveryReport())
        result = FlushResult(
            at=self._clock(),
            # Stopped early (its partitions went to another member, or stale): not settled.
            ok=settled is not None and not stale,
            groups=len(updates),
            requests=report.requests,
            rejected=len(report.rejected),
            changes=window.changes,
            dlq=len(window.dlq),
            duration_seconds=round(time.monotonic() - started, 3),
            error=flushing.note(stopped=settled is None, committed=committed, stale=stale),
        )
        self._flushed(result, report, flushing=flushing, committed=committed)
        if stale:
            self._reread.add(window.offsets)
            await self._read_again("mapping_changed")
            self._schedule.retry_after(self._clock(), 0)  # once read again, not a slot later
        return result

    async def _settle_window(
        self, flushing: Flushing
    ) -> tuple[list[GroupUpdate], DeliveryReport] | None:
        """What was sent and how; None when the group gave every partition away."""
        window = flushing.window
        await resolve_lookups(self._salesforce, self._schemas, self.holder.current, window)
        sent = await send_kept(self._amplitude, flushing, window.drain())
        if sent is None:
            return None
        updates, report = sent
        await self._sent.record(self.holder.current, updates, report)  # what a reconcile compares
        for rejection in report.rejected:
            identification = to_identification(rejection.update)
            window.reject(identification, rejection.status, rejection.reason)
        await write_dead_letters(self._producer, self._topics.dlq, self.metrics, window.dlq)
        return updates, report

    async def _commit(self, flushing: Flushing) -> dict[Partition, int]:
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
        flushing: Flushing,
        committed: Mapping[Partition, int],
    ) -> None:
        self.flushes += 1
        now = self._clock()
        self._schedule.flushed(now)
        if self._reread.held:  # flushed full while reading again: the rest goes soon too
            self._schedule.retry_after(now, 0)
        self._retry.reset()
        self.state.flushed(result)
        self.state.pending_groups = 0
        self.metrics.flush_duration.observe(result.duration_seconds)
        self.metrics.flush_groups.set(result.groups)
        self.state.per_minute.add("groups_flushed", result.groups, now.timestamp())
        if result.ok and (committed or self.state.kafka_unreachable is None):  # Kafka answered
            self.state.last_successful_flush = now
            self.metrics.last_successful_flush.set(now.timestamp())
        self.metrics.pending_groups.set(0)
        for (group_type, prop), count in report.truncated.items():
            self.metrics.truncated_values.labels(group_type, prop).inc(count)
        log.log(
            logging.INFO if result.busy else logging.DEBUG,
            "flush",
            changes=result.changes,
            groups=result.groups,
            requests=result.requests,
            retries=report.retries,
            rejected=result.rejected,
            dlq=result.dlq,
            bytes=report.bytes_sent,
            seconds=result.duration_seconds,
            committed=len(committed) == len(flushing.window.offsets),
            **({"revoked": partition_names(flushing.lost)} if flushing.lost else {}),
            **({"stopped_early": True} if flushing.revoked.is_set() else {}),
            next_flush_at=self._schedule.next_at.isoformat(),
        )

    async def _failed(self, exc: Exception) -> None:
        """Nothing of this window is committed: forget it, rewind, retry after a pause."""
        delay, stopping = self._retry.next(), not getattr(exc, "alert", True)  # a stop
        self.metrics.flush_failures.inc(0 if stopping else 1)
        failed, self._failed_flush = self._failed_flush, None
        if failed is None:  # the fetch failed, not a flush
            failed = FlushResult(at=self._clock(), ok=False)
        else:
            self.metrics.flush_duration.observe(failed.duration_seconds)
        self.state.flushed(dataclasses.replace(failed, error=str(exc)))
        log.log(
            logging.INFO if stopping else logging.ERROR,
            "flush_failed",
            error=type(exc).__name__,
            reason=str(exc),
            groups=failed.groups,
            requests=failed.requests,
            retry_in_seconds=round(delay, 1),
            committed=False,
        )
        await self._read_again("failure")
        self._schedule.retry_after(self._clock(), delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    # -- rebalance and rewind ---------------------------------------------------

    def forget(self, why: str) -> None:
        """Drop everything held since the last commit; Kafka still has it."""
        if not self._window.empty:
            log.info("deliver_window_dropped", why=why, changes=self._window.changes)
        self._window = FlushWindow()
        self._generation += 1
        self.state.pending_groups = 0

    async def _read_again(self, why: str) -> None:
        """Forget the window and read on from the committed offsets."""
        self._reread.add(self._window.offsets)
        self.forget(why)
        if self._consumer is not None:
            try:
                await self.rewind(self._consumer.assignment())
            except KafkaError as exc:
                # Consuming on from the old position would skip the dropped window.
                self._must_rewind = True
                log.error("deliver_rewind_failed", reason=str(exc), retrying=True)

    async def rewind(self, partitions: set[Partition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        self._generation += 1  # a batch fetched before the seek must not be taken
        # A run the window holds from the offset sought is not read twice; one from
        # elsewhere would be followed by older records (ChangesConsumer.rewind): dropped.
        while await consumer.rewind(partitions, lambda: self._window.taken_runs()):
            self.forget("rewind")

    # -- observability ------------------------------------------------------------

    def _publish_schedule(self) -> None:
        self.state.next_flush_at = self._schedule.next_at
