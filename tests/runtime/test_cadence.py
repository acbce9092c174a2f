"""The flush schedule, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.config.mapping import DailyCadence, HourlyCadence, IntervalCadence
from pipeline.runtime.cadence import FlushSchedule, describe, next_flush_after


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("2026-01-01T10:00:00", "2026-01-01T10:00:05"),
        ("2026-01-01T23:59:58", "2026-01-02T00:00:03"),
    ],
)
def test_interval(last: str, expected: str) -> None:
    cadence = IntervalCadence(mode="interval", every_seconds=5)
    assert next_flush_after(cadence, at(last)) == at(expected)


def test_interval_due_exactly_every_interval() -> None:
    cadence = IntervalCadence(mode="interval", every_seconds=5)
    assert next_flush_after(cadence, at("2026-01-01T10:00:00")) == at("2026-01-01T10:00:05")


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("2026-01-01T10:00:00", "2026-01-01T11:00:00"),
        ("2026-01-01T10:59:59", "2026-01-01T11:00:00"),
        ("2026-01-01T23:30:00", "2026-01-02T00:00:00"),
    ],
)
def test_hourly_slots(last: str, expected: str) -> None:
    assert next_flush_after(HourlyCadence(mode="hourly"), at(last)) == at(expected)


def test_hourly_never_flushes_early() -> None:
    cadence = HourlyCadence(mode="hourly")
    started = at("2026-01-01T10:20:00")
    assert next_flush_after(cadence, started) == at("2026-01-01T11:00:00")


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("2026-01-01T01:00:00", "2026-01-01T02:30:00"),
        ("2026-01-01T02:30:00", "2026-01-02T02:30:00"),
        ("2026-01-01T02:31:00", "2026-01-02T02:30:00"),
        ("2026-12-31T03:00:00", "2027-01-01T02:30:00"),
    ],
)
def test_daily_slots(last: str, expected: str) -> None:
    cadence = DailyCadence(mode="daily", at="02:30")
    assert next_flush_after(cadence, at(last)) == at(expected)


def test_daily_never_flushes_early() -> None:
    cadence = DailyCadence(mode="daily", at="00:00")
    started = at("2026-01-01T00:00:01")
    assert next_flush_after(cadence, started) == at("2026-01-02T00:00:00")


def test_describe() -> None:
    assert describe(DailyCadence(mode="daily", at="04:00")) == "daily at 04:00 UTC"
    assert describe(HourlyCadence(mode="hourly")) == "hourly at minute 0"
    assert describe(IntervalCadence(mode="interval", every_seconds=9)) == "every 9s"


def test_a_new_cadence_keeps_a_retry_that_is_pending() -> None:
    """A flush halted by a mapping revision retries at once, whatever cadence it brings."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    schedule = FlushSchedule(IntervalCadence(mode="interval", every_seconds=1), now)
    schedule.flushed(now)
    schedule.retry_after(now, 0)
    schedule.change(DailyCadence(mode="daily", at="00:00"))
    assert schedule.due(now)
    schedule.flushed(now + timedelta(seconds=1))  # the retry ran: the daily slot is next
    assert schedule.next_at == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    schedule.change(IntervalCadence(mode="interval", every_seconds=60))
    assert schedule.next_at == now + timedelta(seconds=61)  # from the last flush, no retry
