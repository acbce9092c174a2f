"""The one exponential backoff behind every retry loop (pipeline/backoff.py)."""

from __future__ import annotations

import pytest

from pipeline.backoff import exponential_delay
from pipeline.runtime.retry import Backoff


def test_equal_jitter_doubles_up_to_the_ceiling_and_stays_within_half_of_the_step() -> None:
    assert exponential_delay(0, 0.0, first=0.5, ceiling=8) == 0.25
    assert exponential_delay(0, 0.999, first=0.5, ceiling=8) == pytest.approx(0.5, abs=0.001)
    assert exponential_delay(3, 1.0, first=0.5, ceiling=8) == 4.0
    assert exponential_delay(10, 1.0, first=0.5, ceiling=8) == 8.0


def test_proportional_jitter_stays_within_a_fifth_of_the_step() -> None:
    steps = [exponential_delay(n, 0.5, first=1, ceiling=60, kind="proportional") for n in range(8)]
    assert steps == [1, 2, 4, 8, 16, 32, 60, 60]
    assert exponential_delay(2, 0.0, first=1, ceiling=60, kind="proportional") == pytest.approx(3.2)
    assert exponential_delay(2, 1.0, first=1, ceiling=60, kind="proportional") == pytest.approx(4.8)


def test_a_loop_backoff_grows_from_first_to_its_ceiling_and_starts_over_on_reset() -> None:
    backoff = Backoff(first=2.0, ceiling=10.0)
    delays = [backoff.next() for _ in range(5)]
    for delay, step in zip(delays, [2, 4, 8, 10, 10], strict=True):
        assert 0.8 * step <= delay <= 1.2 * step
    backoff.reset()
    assert 1.6 <= backoff.next() <= 2.4


def test_a_retry_loop_that_never_ends_never_overflows() -> None:
    # A day and more of failures: every loop keeps waiting the ceiling, never raises.
    for kind in ("equal", "proportional"):
        delay = exponential_delay(100_000, 0.5, first=2.0, ceiling=60.0, kind=kind)  # type: ignore[arg-type]
        assert 30.0 <= delay <= 60.0
