"""How many requests to Amplitude may be in flight: additive increase, multiplicative decrease.

Pure: answers and times come in, a level comes out. The level starts at
``initial`` and never leaves ``[1, ceiling]``:

- a fast, successful answer (2xx, or a 400/413 about the request's content,
  which says nothing about load) counts towards growth; after ``level`` of them
  in a row the level grows by one, so it rises by about one per round of
  requests, as TCP's congestion window does;
- a slow answer (over ``slow_seconds``) neither grows nor shrinks the level;
- 429, 5xx, a timeout or a lost connection halves the level, once per round:
  answers to requests started before the last decrease do not halve it again;
- a ``Retry-After`` holds back new requests until that time has passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.amplitude.backoff import is_retriable


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered (or failed) request, as the controller sees it."""

    status: int | None  # None: no answer (timeout, connection error)
    started: float
    seconds: float
    retry_after: float | None = None

    @property
    def overloaded(self) -> bool:
        return self.status is None or is_retriable(self.status)


class ConcurrencyController:
    """AIMD level of requests in flight; one per client, shared by its sends."""

    def __init__(
        self, ceiling: int, *, initial: int | None = None, slow_seconds: float = 5.0
    ) -> None:
        if ceiling < 1:
            raise ValueError("the ceiling must be at least 1")
        self.ceiling = ceiling
        self.level = max(1, min(ceiling, initial if initial is not None else ceiling))
        self.slow_seconds = slow_seconds
        self.paused_until = 0.0
        self.increases = 0
        self.decreases = 0
        self._fast_in_a_row = 0
        self._last_decrease = float("-inf")

    def record(self, outcome: Outcome) -> int:
        """Take one outcome into account; answers the new level."""
        if outcome.retry_after is not None:
            resume = outcome.started + outcome.seconds + outcome.retry_after
            self.paused_until = max(self.paused_until, resume)
        if outcome.overloaded:
            self._fast_in_a_row = 0
            if outcome.started > self._last_decrease:
                self._decrease(outcome.started + outcome.seconds)
        elif outcome.seconds > self.slow_seconds:
            self._fast_in_a_row = 0
        else:
            self._fast_in_a_row += 1
            if self._fast_in_a_row >= self.level and self.level < self.ceiling:
                self.level += 1
                self.increases += 1
                self._fast_in_a_row = 0
        return self.level

    def pause_remaining(self, now: float) -> float:
        """Seconds to wait before starting a new request (a Retry-After still running)."""
        return max(0.0, self.paused_until - now)

    def _decrease(self, now: float) -> None:
        self.level = max(1, self.level // 2)
        self.decreases += 1
        self._last_decrease = now

    def snapshot(self) -> dict[str, int | float]:
        """For ``/status``: the level, its ceiling and how often it moved."""
        return {
            "level": self.level,
            "ceiling": self.ceiling,
            "increases": self.increases,
            "decreases": self.decreases,
        }
