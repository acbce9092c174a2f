"""The retry schedule. No network, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.amplitude.backoff import (
    RetryPolicy,
    backoff_delay,
    is_retriable,
    parse_retry_after,
    retry_schedule,
    within_deadline,
)

POLICY = RetryPolicy(base_seconds=1, cap_seconds=60, min_429_wait_seconds=15, deadline_seconds=300)


def test_exponential_with_equal_jitter_and_cap() -> None:
    assert retry_schedule(POLICY, [0.0] * 8, throttled=False) == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert retry_schedule(POLICY, [0.999999] * 3, throttled=False) == pytest.approx(
        [1, 2, 4], rel=1e-5
    )


def test_throttled_waits_at_least_the_429_minimum_stretched_by_jitter() -> None:
    assert backoff_delay(POLICY, 1, jitter=0.0, throttled=True) == 15
    assert backoff_delay(POLICY, 1, jitter=0.5, throttled=True) == 22.5
    # Past the minimum, the exponential step wins.
    assert backoff_delay(POLICY, 7, jitter=0.0, throttled=True) == 30


def test_retry_after_wins_when_longer() -> None:
    assert backoff_delay(POLICY, 1, jitter=0.0, throttled=True, retry_after=40) == 40
    assert backoff_delay(POLICY, 1, jitter=0.0, throttled=True, retry_after=3) == 15
    assert backoff_delay(POLICY, 1, jitter=0.0, retry_after=5) == 5


@pytest.mark.parametrize(
    ("status", "retriable"),
    [(429, True), (500, True), (503, True), (599, True), (400, False), (413, False), (200, False)],
)
def test_retriable_statuses(status: int, retriable: bool) -> None:
    assert is_retriable(status) is retriable


def test_parse_retry_after() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("20", now) == 20
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_deadline() -> None:
    assert within_deadline(POLICY, started=100, now=350, delay=50)
    assert not within_deadline(POLICY, started=100, now=350, delay=51)
