"""How old each CDC channel's stored replay id is, against Salesforce's 72-hour retention.

Salesforce keeps change events for 72 hours. Ingest resumes a channel from the
replay id in ``sfamp.replay``; once the event behind it is older than the
retention, Salesforce refuses the replay id and the object must be re-synced.
A quiet channel ages too (its replay id only moves when an event arrives), so
this warns early: from 24 h, and fails from 60 h, leaving half a day to act.
Pure: ``sfamp replay status`` and ``sfamp status`` read the topic and render.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from pipeline.errors import EnvelopeError
from pipeline.kafka.inspect import Message, iso_time
from pipeline.kafka.records import RESYNC_PREFIX, ReplayMark, decode_replay_mark

RETENTION_HOURS: Final = 72
WARN_AFTER_HOURS: Final = 24
FAIL_AFTER_HOURS: Final = 60

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class ReplayAge:
    """A channel's stored replay id measured against Salesforce's retention."""

    channel: str
    level: Level
    replay_id: int | None = None
    stored_at_ms: int | None = None
    event_ts_ms: int | None = None
    age_seconds: float | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "status": self.level,
            "replay_id": self.replay_id,
            "event_time": iso_time(self.event_ts_ms),
            "stored_at": iso_time(self.stored_at_ms),
            "age_seconds": self.age_seconds,
            "retention_seconds": RETENTION_HOURS * 3600,
            "note": self.note or None,
        }


def age_level(age_seconds: float) -> Level:
    hours = age_seconds / 3600
    if hours >= FAIL_AFTER_HOURS:
        return "fail"
    return "warn" if hours >= WARN_AFTER_HOURS else "ok"


def mark_age_seconds(mark: ReplayMark, now: int) -> float:
    """Seconds from the commit of the event behind the replay id (else from when the mark
    was stored: a channel that has seen no event yet) to ``now`` (Unix ms)."""
    since = mark.event_ts_ms if mark.event_ts_ms is not None else mark.stored_at_ms
    return max(0.0, (now - since) / 1000)


def replay_age(mark: ReplayMark, now: int) -> ReplayAge:
    """Age of the event behind the replay id (its commit time; else when it was stored)."""
    age = mark_age_seconds(mark, now)
    note = "" if mark.event_ts_ms is not None else "no event time stored; aged from stored_at"
    return ReplayAge(
        mark.channel, age_level(age), mark.replay_id, mark.stored_at_ms, mark.event_ts_ms, age, note
    )


def replay_ages(messages: Iterable[Message], now: int) -> list[ReplayAge]:
    """The latest mark per channel (a compacted table read in order), sorted by channel."""
    latest: dict[str, ReplayAge | None] = {}
    for message in messages:
        channel = message.key_text
        if channel.startswith(RESYNC_PREFIX):
            # A re-sync the ingest service still owes (removed when it finishes).
            latest[channel] = (
                None
                if message.value is None
                else ReplayAge(channel, "warn", note="object re-sync pending or running")
            )
            continue
        try:
            mark = decode_replay_mark(message.key, message.value)
        except EnvelopeError as exc:
            latest[channel] = ReplayAge(channel, "fail", note=f"unreadable: {exc}")
            continue
        latest[channel] = None if mark is None else replay_age(mark, now)
    return [age for _, age in sorted(latest.items()) if age is not None]
