"""The ingest pump: Salesforce CDC over CometD → ``sfamp.changes.<Object>``.

For every batch of CDC messages it writes one envelope per record id, waits
until Kafka acknowledged all of them (acks=all), and only then stores each
channel's newest replay id in ``sfamp.replay``. A crash therefore replays
events, never skips them.

Recovery, per DESIGN.md "Semantics that must hold":

* ``GAP_*`` events: the named records are re-read through REST and written as
  full records (or as deletes when they are gone), after every event up to the
  gap event is queued (same key, same partition, before the re-read). A re-read
  is ordered at the later of its ``SystemModstamp`` and the gap event's commit,
  and deliver places it after every change of its record held before it, so it
  never loses to an older event of the same second (stamps have whole seconds).
* ``GAP_OVERFLOW``, or a stored replay id Salesforce no longer retains: the
  object is re-synced (:mod:`pipeline.runtime.resync`): every record is read and
  written as a full record. A re-sync is first recorded in ``sfamp.replay`` (key
  ``resync:<Object>``) and the record is removed only when it finished, so a crash
  mid-way restarts it. A re-sync starts only after the subscription is confirmed,
  so nothing between "read" and "subscribed" can fall through.
* Network errors and Salesforce 5xx: reconnect with growing backoff, resuming
  from the durable replay ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from aiosfstream_ng.auth import AuthenticatorBase

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import Settings
from pipeline.errors import (
    EnvelopeError,
    ReplayIdExpiredError,
    SalesforceRequestError,
    SalesforceUnavailableError,
    SfampError,
)
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer, Record
from pipeline.kafka.records import (
    DlqEntry,
    ReplayMark,
    ResyncRequest,
)
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.cadence import now_ms
from pipeline.runtime.hidden_fields import reporting_schemas
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.replay_start import (
    Checkpoints,
    MarkWriter,
    Rewind,
    SkippedObjects,
    read_checkpoints,
    stale_start,
    unmarked_start,
)
from pipeline.runtime.resync import Resyncs
from pipeline.runtime.retry import Backoff
from pipeline.runtime.salesforce_reads import (
    RestReads,
    fields_to_read,
    read_described,
    records_by_id,
)
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.cdc import CdcSubscriber, DurableReplayStorage
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.salesforce.channels import EARLIEST, channel_for, channels_for
from pipeline.salesforce.client import SalesforceClient
from pipeline.transform.envelope import GAP_OPS, ChangeEnvelope, encode
from pipeline.transform.reads import (
    reread_envelope,
)
from pipeline.transform.schema import ObjectSchema

log = structlog.get_logger(__name__)

MODSTAMP = "SystemModstamp"
HEARTBEAT_SECONDS = 5.0


# Builds a fresh CometD authenticator for each (re)connection.
AuthenticatorFactory = Callable[[], AuthenticatorBase]


class IngestPump:
    """One CometD connection for every mapped object's channel, feeding Kafka."""

    def __init__(
        self,
        settings: Settings,
        holder: MappingHolder,
        salesforce: SalesforceClient,
        producer: ChangeProducer,
        state: ServiceState,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.state = state
        self.metrics = metrics
        self._salesforce = salesforce
        self._rest: RestReads = salesforce.rest
        self._authenticator: AuthenticatorFactory = salesforce.auth.streaming_authenticator
        self._producer = producer
        self._topics = TopicNames(settings.kafka.topic_prefix)
        self._schemas = reporting_schemas(self._rest, state, metrics)
        self._backoff = Backoff(first=1.0, ceiling=60.0)
        self._resyncs = Resyncs(
            holder, salesforce, producer, self._topics, self._schemas, state, metrics
        )
        self._gap_resyncs: set[str] = set()
        # On a custom channel, the events of objects no mapping names yet.
        self._skipped = SkippedObjects()

    @property
    def skipped_objects(self) -> list[str]:
        """Objects whose events a custom channel skipped since start (no mapping names them)."""
        return self._skipped.objects

    @property
    def resyncs_done(self) -> int:
        """How many object re-syncs finished since start."""
        return self._resyncs.done

    # -- channels -------------------------------------------------------------

    def channels(self, config: MappingConfig) -> list[str]:
        return channels_for(config.objects, self.settings.salesforce.cdc_channel)

    def objects_of(self, channel: str, config: MappingConfig) -> list[str]:
        if self.settings.salesforce.cdc_channel == channel:
            return config.objects
        return [obj for obj in config.objects if channel_for(obj) == channel]

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, pump, and start over after errors or when the channels change."""
        try:
            while True:
                config = self.holder.current
                self.state.channels_expected = set(self.channels(config))
                try:
                    # Before subscribing (a rewind that failed is tried again on each turn).
                    rewind = self._skipped.rewind_for(config, now_ms())
                    if rewind is not None:
                        await self._rewind(rewind)
                    await self._until_channels_change(config)
                except ReplayIdExpiredError as exc:
                    self.metrics.follow_replay_marks({})
                    objects = self.objects_of(exc.channel, config)
                    try:
                        await self._resyncs.on_replay_expired(exc, objects)
                    except SfampError as recording:  # Kafka down: the next turn meets it again
                        await self._pause(recording)
                except SfampError as exc:
                    await self._pause(exc)
        finally:
            await self._resyncs.cancel_all()
            self.state.channels_subscribed.clear()
            self.metrics.follow_replay_marks({})
            if self._skipped.objects:  # held in memory only: said before they are gone
                log.warning(
                    "ingest_skipped_objects_forgotten",
                    objects=self._skipped.objects,
                    hint="if a revision maps one of them later, run 'sfamp backfill --object' "
                    "for it once the service follows it",
                )

    async def _pause(self, exc: SfampError) -> None:
        self.state.channels_subscribed.clear()
        self.metrics.follow_replay_marks({})  # no channel followed: SfampIngestMissing
        delay = self._backoff.next()
        self.state.beat("ingest")  # retrying is progress; a restart would not help
        # An error when a person must fix it; a warning for what waiting alone clears.
        say = log.warning if exc.retriable else log.error
        say(
            "ingest_interrupted",
            error=type(exc).__name__,
            reason=str(exc),
            # Every error is retried here; whether waiting alone can fix it is the other field.
            retriable=True,
            fix_needed=not exc.retriable,
            retry_in_seconds=round(delay, 1),
        )
        await asyncio.sleep(delay)

    async def _until_channels_change(self, config: MappingConfig) -> None:
        """Pump until the channels change, a revision maps new objects (a custom channel
        stays the same, and resumes before the events it skipped of them), or the pump
        ends."""
        channels = self.channels(config)
        pump = asyncio.create_task(self._subscribe_and_pump(config, channels))
        changed: asyncio.Task[object] | None = None
        seen = self.holder.generation
        try:
            while True:
                changed = asyncio.create_task(self.holder.wait_changed(seen))
                done, _ = await asyncio.wait({pump, changed}, return_when=asyncio.FIRST_COMPLETED)
                if pump in done:
                    pump.result()
                    return
                seen = self.holder.generation
                current = self.holder.current
                added = set(current.objects) - set(config.objects)
                if added or self._skipped.rewind_for(current, now_ms()) is not None:
                    return  # subscribing again makes their topics first, and rewinds for them
                if self.channels(current) != channels:
                    log.info("ingest_resubscribing", channels=self.channels(current))
                    return
        finally:
            # Also when this task is cancelled (shutdown): nothing may outlive the pump.
            for task in (pump, changed):
                if task is not None:
                    task.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _rewind(self, rewind: Rewind) -> None:
        """Store where the channel resumes; its objects are forgotten once Kafka holds it
        (a failure leaves them for the next turn)."""
        mark = ReplayMark(rewind.channel, rewind.replay_from, now_ms())
        await self._producer.send_all([(self._topics.replay, *mark.encode())])
        self._skipped.rewound(rewind)
        log.info(
            "ingest_replaying_for_added_objects",
            objects=list(rewind.objects),
            replay_from=rewind.replay_from,
        )

    async def _subscribe_and_pump(self, config: MappingConfig, channels: list[str]) -> None:
        # A mapping edit may have added an object: its topic must exist before writes.
        await ensure_topics(self.settings.kafka, sfamp_topics(self.settings.kafka, config.objects))
        checkpoints = await read_checkpoints(self.settings.kafka, self._topics.replay)
        stale = stale_start(checkpoints.marks, channels, now_ms())
        if stale is not None:
            raise ReplayIdExpiredError(
                f"{stale} was last followed over 72 hours ago", channel=stale, replay_id=EARLIEST
            )
        default = unmarked_start(checkpoints.marks, self.settings.salesforce.replay_start)
        storage = DurableReplayStorage(
            {c: m.replay_id for c, m in checkpoints.marks.items() if c in channels},
            default=default,
        )
        subscriber = CdcSubscriber(
            self._authenticator(),
            channels,
            storage,
            api_version=self.settings.salesforce.api_version,
        )
        async with subscriber as cdc:
            self.state.channels_subscribed = set(cdc.subscribed)
            self.state.beat("ingest")
            self._backoff.reset()
            log.info(
                "ingest_subscribed",
                channels=sorted(cdc.subscribed),
                replay_from={c: storage.marks.get(c, default) for c in channels},
            )
            fresh = await self._mark_subscribed(channels, checkpoints, storage)
            for request in checkpoints.resyncs.values():
                if request.sfdc_object in config.objects:
                    self._resyncs.start(request)
            known = {c: m for c, m in checkpoints.marks.items() if c in channels} | fresh
            self.metrics.follow_replay_marks(known)
            marks = MarkWriter(self._producer, self._topics.replay, storage, self.metrics, known)
            consume = asyncio.create_task(self._consume(cdc, marks))
            watch = asyncio.create_task(self._watch(cdc, marks))
            try:
                done, _ = await asyncio.wait({consume, watch}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in (consume, watch):
                    task.cancel()
                await asyncio.gather(consume, watch, return_exceptions=True)

    async def _mark_subscribed(
        self, channels: list[str], checkpoints: Checkpoints, storage: DurableReplayStorage
    ) -> dict[str, ReplayMark]:
        """Give every channel a durable starting point from its first subscription on (the
        marks stored now, by channel).

        Without one, a restart would subscribe from the newest event and skip what
        changed while sfamp was down on a channel that had not seen an event yet.
        Replaying the retained events instead (-2) is harmless.
        """
        fresh = [
            ReplayMark(channel, EARLIEST, now_ms())
            for channel in channels
            if channel not in checkpoints.marks or checkpoints.marks[channel].replay_id < 0
        ]
        if fresh:
            await self._producer.send_all([(self._topics.replay, *m.encode()) for m in fresh])
        for mark in fresh:  # also for aiocometd's own reconnects from now on
            storage.restart_from(mark.channel, EARLIEST)
        return {mark.channel: mark for mark in fresh}

    async def _consume(self, cdc: CdcSubscriber, marks: MarkWriter) -> None:
        async for batch in cdc.batches():
            await self._handle(batch, marks, self.holder.current)
            self.state.beat("ingest")

    async def _watch(self, cdc: CdcSubscriber, marks: MarkWriter) -> None:
        """Liveness while no change happens, a check that no subscription was lost, and
        the -2 marks of quiet channels stored again every hour (:func:`stale_start`).

        aiocometd resubscribes by itself after a reconnect; a refused resubscribe
        would otherwise leave a channel silently dropped.
        """
        while cdc.is_open:
            missing = cdc.missing_subscriptions()
            if missing:
                self.state.channels_subscribed -= missing
                raise SalesforceUnavailableError(
                    f"CometD lost the subscription to {sorted(missing)}; resubscribing"
                )
            await marks.refresh_quiet(cdc.subscribed, now_ms())
            self.state.beat("ingest")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- one batch --------------------------------------------------------------

    async def _handle(
        self, batch: list[dict[str, Any]], marks: MarkWriter, config: MappingConfig
    ) -> None:
        records: list[Record] = []
        newest: dict[str, tuple[int, int | None]] = {}
        gaps: dict[str, dict[str, int]] = {}  # object -> record id -> newest gap commit
        overflows: set[str] = set()
        counts: dict[str, int] = {}
        for message in batch:
            channel, replay_id = _position(message)
            try:
                envelopes = envelopes_from_event(message)
            except EnvelopeError as exc:
                records.append(self._malformed(message, channel, replay_id, exc))
                envelopes = []
            for envelope in envelopes:
                if envelope.object not in config.objects:
                    if channel == self.settings.salesforce.cdc_channel:
                        last = marks.last(channel, now_ms())  # stored before this batch
                        self._skipped.skip(channel, envelope.object, last)
                    continue
                if envelope.op == "gap_overflow" or envelope.record_id.endswith("*"):
                    overflows.add(envelope.object)
                elif envelope.op in GAP_OPS:
                    named = gaps.setdefault(envelope.object, {})
                    named[envelope.record_id] = max(
                        envelope.commit_ts, named.get(envelope.record_id, envelope.commit_ts)
                    )
                else:
                    records.append(self._change(envelope))
                    counts[envelope.object] = counts.get(envelope.object, 0) + 1
            if replay_id is not None:
                commit_ts = envelopes[-1].commit_ts if envelopes else None
                newest[channel] = (replay_id, commit_ts)
        records += await self._reread(gaps, config)
        overflows |= self._gap_resyncs
        self._gap_resyncs = set()
        requests = [ResyncRequest(obj, "gap_overflow", now_ms()) for obj in sorted(overflows)]
        records += [(self._topics.replay, *request.encode()) for request in requests]
        # Changes first: a replay id is stored only once Kafka holds every event up to it.
        await self._producer.send_all(records)
        await marks.store([ReplayMark(c, r, now_ms(), ts) for c, (r, ts) in newest.items()])
        for obj, count in counts.items():
            self.metrics.events_ingested.labels(obj).inc(count)
        self.state.per_minute.add("changes_ingested", sum(counts.values()), now_ms() / 1000)
        for request in requests:
            log.error(
                "cdc_gap_overflow",
                object=request.sfdc_object,
                action="re-syncing the whole object",
            )
            self._resyncs.start(request)

    def _change(self, envelope: ChangeEnvelope) -> Record:
        return (self._topics.changes(envelope.object), envelope.kafka_key, encode(envelope))

    def _malformed(
        self, message: Mapping[str, Any], channel: str, replay_id: int | None, exc: Exception
    ) -> Record:
        log.error("cdc_event_malformed", channel=channel, replay_id=replay_id, reason=str(exc))
        self.metrics.dlq_messages.labels("malformed").inc()
        entry = DlqEntry(
            id=f"cdc:{channel}:{replay_id}",
            reason="malformed",
            detail=f"CDC event not understood: {exc}",
            at_ms=now_ms(),
            key=channel,
            payload=orjson.dumps(message, default=str).decode(),
            extra={"channel": channel, "replay_id": replay_id},
        )
        return (self._topics.dlq, *entry.encode())

    async def _reread(self, gaps: dict[str, dict[str, int]], config: MappingConfig) -> list[Record]:
        """Gap events name records but not their changes: read them as they are now.

        Each read follows its gap event (and every event before it), so it is ordered
        no earlier than the gap event's commit; deliver places it after them too.
        """
        records: list[Record] = []
        for obj, ids in gaps.items():
            try:
                found = await self._gap_records(config, obj, ids)
            except SalesforceRequestError as exc:
                # Retrying the same read cannot help; reading the whole object can.
                log.error("cdc_gap_reread_refused", object=obj, reason=str(exc))
                self._gap_resyncs.add(obj)
                continue
            for record_id, gap_ts in sorted(ids.items()):
                envelope = reread_envelope(obj, record_id, found.get(record_id), floor_ms=gap_ts)
                records.append(self._change(envelope))
            log.warning("cdc_gap_reread", object=obj, records=len(ids))
            self.metrics.events_ingested.labels(obj).inc(len(ids))
            self.state.per_minute.add("changes_ingested", len(ids), now_ms() / 1000)
        return records

    async def _gap_records(
        self, config: MappingConfig, obj: str, ids: Mapping[str, int]
    ) -> dict[str, dict[str, Any]]:
        """The records ``ids`` names as they are now, read as ``read_described`` reads."""

        async def read(schema: ObjectSchema | None) -> dict[str, dict[str, Any]]:
            fields = [*fields_to_read(config, obj, schema), MODSTAMP]
            return await records_by_id(self._rest, obj, ids, fields)

        await self._schemas.ensure_mapped(config, [obj])
        return await read_described(self._schemas, config, obj, read)


def _position(message: Mapping[str, Any]) -> tuple[str, int | None]:
    channel = str(message.get("channel") or "")
    data = message.get("data")
    event = data.get("event") if isinstance(data, Mapping) else None
    replay_id = event.get("replayId") if isinstance(event, Mapping) else None
    return channel, replay_id if isinstance(replay_id, int) else None
