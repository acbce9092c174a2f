"""When the next reconcile runs: pure functions of the schedule, the last run and a clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.config.mapping import DailyReconcile, HourlyReconcile, ReconcileOff
from pipeline.runtime.reconcile.schedule import describe, next_run, next_slot_after
from tests.support.clock import FakeClock

DAILY = DailyReconcile(mode="daily", at="03:00")
HOURLY = HourlyReconcile(mode="hourly", minute=15)
OFF = ReconcileOff(mode="off")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "moment", "expected"),
    [
        (DAILY, "2024-05-01T02:59:59", "2024-05-01T03:00:00"),
        (DAILY, "2024-05-01T03:00:00", "2024-05-02T03:00:00"),  # strictly after
        (DAILY, "2024-12-31T23:00:00", "2025-01-01T03:00:00"),
        (HOURLY, "2024-05-01T10:14:00", "2024-05-01T10:15:00"),
        (HOURLY, "2024-05-01T10:15:00", "2024-05-01T11:15:00"),
        (HOURLY, "2024-05-01T23:50:00", "2024-05-02T00:15:00"),
    ],
)
def test_next_slot(schedule: DailyReconcile | HourlyReconcile, moment: str, expected: str) -> None:
    assert next_slot_after(schedule, at(moment)) == at(expected)


def test_off_has_no_slot_and_never_runs_even_to_resume() -> None:
    now = at("2024-05-01T10:00:00")
    assert next_slot_after(OFF, now) is None
    assert next_run(OFF, now=now, last_finished=None, interrupted=True) is None


def test_a_first_start_waits_for_the_next_slot() -> None:
    clock = FakeClock(at("2024-05-01T10:00:00"))
    assert next_run(DAILY, now=clock(), last_finished=None, interrupted=False) == at(
        "2024-05-02T03:00:00"
    )


def test_a_missed_slot_runs_at_once_and_a_restart_never_runs_twice() -> None:
    clock = FakeClock(at("2024-05-02T09:00:00"))
    # Last finished yesterday at 03:05; the service was down at today's 03:00.
    missed = next_run(
        DAILY, now=clock(), last_finished=at("2024-05-01T03:05:00"), interrupted=False
    )
    assert missed is not None
    assert missed <= clock()
    # Finished today at 03:04: a restart at 09:00 waits for tomorrow.
    done = next_run(DAILY, now=clock(), last_finished=at("2024-05-02T03:04:00"), interrupted=False)
    assert done == at("2024-05-03T03:00:00")


def test_an_interrupted_run_resumes_at_once() -> None:
    clock = FakeClock(at("2024-05-02T09:00:00"))
    resumed = next_run(
        HOURLY, now=clock(), last_finished=at("2024-05-02T08:15:30"), interrupted=True
    )
    assert resumed == clock()


def test_descriptions() -> None:
    assert describe(DAILY) == "daily at 03:00 UTC"
    assert describe(HOURLY) == "hourly at minute 15"
    assert describe(OFF) == "off"
