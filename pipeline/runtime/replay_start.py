"""Where each CDC channel's subscription starts: the replay ids and re-syncs stored in
``sfamp.replay``, the start of a channel with none, and the replay a custom channel owes
to objects a mapping revision adds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.errors import EnvelopeError
from pipeline.kafka.compacted import read_table
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import (
    RESYNC_PREFIX,
    ReplayMark,
    ResyncRequest,
    decode_replay_mark,
    decode_resync,
)
from pipeline.runtime.metrics import Metrics
from pipeline.salesforce.cdc import DurableReplayStorage
from pipeline.salesforce.channels import EARLIEST, LATEST

log = structlog.get_logger(__name__)

# Salesforce keeps change events 72 hours.
RETENTION_MS: Final = 72 * 3600 * 1000
# A rewind to a replay id whose event is older than this goes to the oldest retained
# event instead: the id may have expired, which would re-sync every object of the channel.
REWIND_HORIZON_MS: Final = 70 * 3600 * 1000
# How often a subscribed channel resuming from the retained events (-2) has its mark
# stored again: its age then says how long ago sfamp last followed it.
REFRESH_MS: Final = 3600 * 1000


@dataclass(slots=True)
class Checkpoints:
    """What ``sfamp.replay`` holds: the replay id per channel, the re-syncs per object."""

    marks: dict[str, ReplayMark]
    resyncs: dict[str, ResyncRequest]


async def read_checkpoints(settings: KafkaSettings, topic: str) -> Checkpoints:
    """Every stored replay mark and re-sync request; an unreadable record is logged."""
    table, _ = await read_table(settings, topic)
    checkpoints = Checkpoints({}, {})
    for key, (value, _offset) in table.items():
        if value is None:
            continue
        name = key.decode(errors="replace")
        try:
            if name.startswith(RESYNC_PREFIX):
                request = decode_resync(value)
                checkpoints.resyncs[request.sfdc_object] = request
            else:
                mark = decode_replay_mark(key, value)
                if mark is not None:
                    checkpoints.marks[mark.channel] = mark
        except EnvelopeError as exc:
            log.error("replay_record_unreadable", key=name, reason=str(exc))
    return checkpoints


def unmarked_start(marks: Mapping[str, ReplayMark], replay_start: str) -> int:
    """Where a channel with no stored replay id subscribes from.

    ``replay_start`` (``SFAMP_SALESFORCE__REPLAY_START``) holds while nothing is stored for
    any channel: sfamp's first start on the org, before any backfill. Once something is, a
    channel without a mark was added since by a mapping revision, and a backfill of its
    object may have ended before this subscription: the latest event would skip the
    changes in between, so it replays the retained events (-2; harmless) instead.
    """
    return EARLIEST if marks or replay_start == "earliest" else LATEST


@dataclass(frozen=True, slots=True)
class Rewind:
    """Resume ``channel`` from ``replay_from`` to read the skipped events of ``objects``."""

    channel: str
    replay_from: int
    objects: tuple[str, ...]


def stale_start(marks: Mapping[str, ReplayMark], channels: list[str], now_ms: int) -> str | None:
    """A channel whose stored mark replays the retained events (-2) but was stored past the
    retention: nothing followed it meanwhile (a service down for days), and events made
    since may be gone, silently, where an expired replay id is refused. It is re-synced."""
    for channel in channels:
        mark = marks.get(channel)
        if mark and mark.replay_id == EARLIEST and now_ms - mark.stored_at_ms > RETENTION_MS:
            return channel
    return None


class MarkWriter:
    """Stores the replay marks of one subscription in ``sfamp.replay``, one write at a time:
    an event's mark and a quiet channel's refreshed -2 never cross on their way."""

    def __init__(
        self,
        producer: ChangeProducer,
        topic: str,
        storage: DurableReplayStorage,
        metrics: Metrics,
        known: Mapping[str, ReplayMark],
    ) -> None:
        """``known``: the marks stored for the subscribed channels when it started."""
        self._producer, self._topic, self._metrics = producer, topic, metrics
        self._storage = storage
        self._lock = asyncio.Lock()
        self._latest = dict(known)  # channel -> the mark stored last

    def last(self, channel: str, now_ms: int) -> tuple[int, int]:
        """The replay id of ``channel`` stored last (or where it was subscribed from), and
        when its event was committed (else stored; else ``now_ms``): Salesforce's retention
        counts from there."""
        mark = self._latest.get(channel)
        since = now_ms if mark is None else mark.event_ts_ms or mark.stored_at_ms
        return self._storage.marks.get(channel, self._storage.default), since

    async def store(self, marks: list[ReplayMark]) -> None:
        """Store ``marks`` once Kafka holds every event up to them; the storage follows."""
        async with self._lock:
            await self._store(marks)

    async def refresh_quiet(self, channels: Iterable[str], now_ms: int) -> None:
        """Store again the -2 mark of each of ``channels`` still at -2 and stored over
        :data:`REFRESH_MS` ago."""
        async with self._lock:
            await self._store(
                [
                    ReplayMark(channel, EARLIEST, now_ms)
                    for channel in channels
                    if self._storage.marks.get(channel) == EARLIEST
                    and now_ms - self._stored_at(channel, now_ms) > REFRESH_MS
                ]
            )

    def _stored_at(self, channel: str, now_ms: int) -> int:
        mark = self._latest.get(channel)
        return now_ms if mark is None else mark.stored_at_ms

    async def _store(self, marks: list[ReplayMark]) -> None:
        if not marks:
            return
        await self._producer.send_all([(self._topic, *mark.encode()) for mark in marks])
        for mark in marks:
            self._storage.advance(mark.channel, mark.replay_id)
            self._latest[mark.channel] = mark
            self._metrics.replay_stored(mark)


class SkippedObjects:
    """The events a custom channel (``SFAMP_SALESFORCE__CDC_CHANNEL``) carried for objects
    no mapping named, so skipped: a revision that maps one may take effect after its
    backfill ended, and the changes in between are then read again from the channel.
    Held in memory: a restart forgets them (it resumes with the revision in force)."""

    def __init__(self) -> None:
        # Per object: the channel, the replay id stored before its first skipped event
        # (resuming there reads that event again), and when that id's event was committed.
        self._since: dict[str, tuple[str, int, int]] = {}

    @property
    def objects(self) -> list[str]:
        return sorted(self._since)

    def skip(self, channel: str, sfdc_object: str, last_stored: tuple[int, int]) -> None:
        """An event of ``sfdc_object`` on ``channel`` was skipped; ``last_stored`` is the
        channel's replay id stored before it and when that one's event was committed
        (:meth:`MarkWriter.last`)."""
        self._since.setdefault(sfdc_object, (channel, *last_stored))

    def rewind_for(self, config: MappingConfig, now_ms: int) -> Rewind | None:
        """Where to resume so that the skipped events of the objects ``config`` maps are
        read again; None when it maps none of them. Kept until :meth:`rewound`."""
        objects = tuple(obj for obj in config.objects if obj in self._since)
        if not objects:
            return None
        channel = self._since[objects[0]][0]
        starts = [self._start(*self._since[obj][1:], now_ms) for obj in objects]
        return Rewind(channel, min(starts), objects)

    def rewound(self, rewind: Rewind) -> None:
        """The channel's next subscription resumes at ``rewind``: forget its objects."""
        for obj in rewind.objects:
            self._since.pop(obj, None)

    @staticmethod
    def _start(replay_id: int, committed_ms: int, now_ms: int) -> int:
        if replay_id == LATEST or now_ms - committed_ms > REWIND_HORIZON_MS:
            return EARLIEST
        return replay_id
