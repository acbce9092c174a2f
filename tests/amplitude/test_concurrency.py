"""The AIMD concurrency controller, fed answers and times by hand (no clock, no I/O)."""

from __future__ import annotations

import pytest

from pipeline.amplitude.concurrency import ConcurrencyController, Outcome


def _ok(started: float = 0.0, seconds: float = 0.05) -> Outcome:
    return Outcome(200, started, seconds)


def test_grows_by_one_per_round_of_fast_successes_up_to_the_ceiling() -> None:
    control = ConcurrencyController(6, initial=2)
    levels = [control.record(_ok()) for _ in range(2 + 3 + 4 + 5 + 6 + 10)]
    assert levels[1] == 3  # two fast answers at level 2
    assert levels[4] == 4  # then three at level 3
    assert max(levels) == control.level == 6
    assert control.increases == 4


def test_halves_on_429_5xx_and_lost_answers_never_below_one() -> None:
    control = ConcurrencyController(64, initial=40)
    for now, status in enumerate([429, 503, None, 500, 502, 429, 429]):
        control.record(Outcome(status, float(now * 10), 0.1))
    assert control.level == 1
    assert control.decreases == 7


def test_one_halving_per_round_for_answers_to_requests_already_in_flight() -> None:
    control = ConcurrencyController(16, initial=16)
    # Sixteen requests started at t=0 all come back 429 at t=1: one halving.
    for _ in range(16):
        control.record(Outcome(429, 0.0, 1.0))
    assert control.level == 8
    # A request started after that decrease may halve again.
    control.record(Outcome(503, 1.5, 0.2))
    assert control.level == 4


def test_slow_answers_do_not_grow_the_level_and_content_errors_count_as_fast() -> None:
    control = ConcurrencyController(8, initial=2, slow_seconds=1.0)
    for _ in range(10):
        control.record(_ok(seconds=3.0))
    assert control.level == 2
    control.record(Outcome(400, 0.0, 0.1))
    control.record(Outcome(413, 0.0, 0.1))
    assert control.level == 3


def test_retry_after_holds_new_requests_until_it_has_passed() -> None:
    control = ConcurrencyController(4)
    control.record(Outcome(429, 100.0, 0.5, retry_after=20.0))
    assert control.pause_remaining(100.5) == pytest.approx(20.0)
    assert control.pause_remaining(115.5) == pytest.approx(5.0)
    assert control.pause_remaining(121.0) == 0.0
    # A shorter Retry-After later never shortens the pause.
    control.record(Outcome(429, 101.0, 0.0, retry_after=1.0))
    assert control.pause_remaining(110.0) == pytest.approx(10.5)


def test_initial_level_is_kept_within_bounds() -> None:
    assert ConcurrencyController(3, initial=4).level == 3
    assert ConcurrencyController(8).level == 8
    assert ConcurrencyController(8, initial=0).level == 1
    with pytest.raises(ValueError, match="ceiling"):
        ConcurrencyController(0)
    assert ConcurrencyController(5, initial=2).snapshot() == {
        "level": 2,
        "ceiling": 5,
        "increases": 0,
        "decreases": 0,
    }
