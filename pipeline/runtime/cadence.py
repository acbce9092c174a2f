"""When the next flush is due: pure functions of the cadence and the time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pipeline.config.mapping import DailyCadence, HourlyCadence, IntervalCadence

Cadence = DailyCadence | HourlyCadence | IntervalCadence


def next_flush_after(cadence: Cadence, last_flush: datetime) -> datetime:
    """The first flush time strictly after ``last_flush``.

    Daily and hourly flushes are wall-clock slots in UTC, so a restart never
    flushes early; an interval flush is due ``every_seconds`` after the last one.
    """
    if isinstance(cadence, IntervalCadence):
        return last_flush + timedelta(seconds=cadence.every_seconds)
    if isinstance(cadence, HourlyCadence):
        slot = last_flush.replace(minute=0, second=0, microsecond=0)
        return slot + timedelta(hours=1)
    hour, minute = (int(part) for part in cadence.at.split(":"))
    slot = last_flush.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return slot if slot > last_flush else slot + timedelta(days=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, as Kafka records and envelopes carry them."""
    return int(time.time() * 1000)


def describe(cadence: Cadence) -> str:
    """Human wording, for status output and logs."""
    if isinstance(cadence, IntervalCadence):
        return f"every {cadence.every_seconds}s"
    if isinstance(cadence, HourlyCadence):
        return "hourly at minute 0"
    return f"daily at {cadence.at} UTC"


class FlushSchedule:
    """The deliver pump's timetable: when the next flush is due, and retries after a failure."""

    def __init__(self, cadence: Cadence, now: datetime) -> None:
        self.cadence = cadence
        self.last = now
        self.next_at = next_flush_after(cadence, now)
        self.retry_at: datetime | None = None  # a flush to try again, before the next slot

    def due(self, now: datetime) -> bool:
        return now >= self.next_at

    def flushed(self, now: datetime) -> None:
        self.last, self.retry_at = now, None
        self.next_at = next_flush_after(self.cadence, now)

    def retry_after(self, now: datetime, seconds: float) -> None:
        """A flush failed (or was halted): try again soon rather than at the next slot."""
        self.next_at = self.retry_at = now + timedelta(seconds=seconds)

    def change(self, cadence: Cadence) -> None:
        """A new mapping brought a new cadence; the next slot follows from the last flush,
        and a retry pending stays as it is."""
        if cadence != self.cadence:
            self.cadence = cadence
            self.next_at = next_flush_after(cadence, self.last)
            if self.retry_at is not None:
                self.next_at = min(self.next_at, self.retry_at)
