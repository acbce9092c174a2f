"""Where each CDC channel's subscription starts: the replay ids and re-syncs stored in
``sfamp.replay``, the start of a channel with none, and the replay a custom channel owes
to objects a mapping revision adds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.errors import EnvelopeError
from pipeline.kafka.compacted import read_table
from pipeline.kafka.records import (
    RESYNC_PREFIX,
    ReplayMark,
    ResyncRequest,
    decode_replay_mark,
    decode_resync,
)
from pipeline.salesforce.cdc import EARLIEST, LATEST

log = structlog.get_logger(__name__)


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


class SkippedObjects:
    """The events a custom channel (``SFAMP_SALESFORCE__CDC_CHANNEL``) carried for objects
    no mapping named, so skipped: a revision that maps one may take effect after its
    backfill ended, and the changes in between are then read again from the channel."""

    def __init__(self) -> None:
        # Per object: the replay id to resume from to see its first skipped event again.
        self._since: dict[str, int] = {}

    @property
    def objects(self) -> list[str]:
        return sorted(self._since)

    def skip(self, sfdc_object: str, last_stored: int) -> None:
        """An event of ``sfdc_object`` was skipped; ``last_stored`` is the channel's replay
        id stored before it."""
        self._since.setdefault(sfdc_object, last_stored)

    def replay_from(self, old: MappingConfig, new: MappingConfig) -> int | None:
        """Where the channel resumes so that the skipped events of objects ``new`` maps and
        ``old`` did not are read again; None when none were skipped."""
        added = [obj for obj in new.objects if obj not in old.objects]
        skipped = [self._since.pop(obj) for obj in added if obj in self._since]
        if not skipped:
            return None
        replay_from = min(EARLIEST if replay_id == LATEST else replay_id for replay_id in skipped)
        log.info("ingest_replaying_for_added_objects", objects=added, replay_from=replay_from)
        return replay_from
