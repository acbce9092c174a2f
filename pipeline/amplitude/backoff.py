"""When to try a request to Amplitude again. Pure: time and randomness come in.

Exponential backoff with jitter for 5xx, timeouts and connection errors. A 429
waits at least ``min_429_wait_seconds`` (Amplitude asks for 15 s and more),
stretched by the jitter up to twice that so that concurrent senders do not come
back together; a ``Retry-After`` header wins when it asks for longer. Every
request gives up at its deadline, so a flush never hangs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from pipeline.backoff import exponential_delay

RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    min_429_wait_seconds: float = 15.0
    deadline_seconds: float = 300.0


def is_retriable(status: int) -> bool:
    """429 and every 5xx: with only ``$set``/``$unset`` sent, a repeat is harmless."""
    return status in RETRIABLE_STATUSES or 500 <= status <= 599


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    *,
    jitter: float,
    throttled: bool = False,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    ``jitter`` is a number in [0, 1): the delay lies between half and all of the
    exponential step ("equal jitter"), so it still grows while spreading out.
    """
    delay = exponential_delay(
        attempt - 1, jitter, first=policy.base_seconds, ceiling=policy.cap_seconds
    )
    if throttled:
        delay = max(delay, policy.min_429_wait_seconds * (1 + jitter))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def retry_schedule(policy: RetryPolicy, jitters: list[float], *, throttled: bool) -> list[float]:
    """Delays for a run of failures, one per jitter value (for dry runs and docs)."""
    return [
        backoff_delay(policy, attempt, jitter=jitter, throttled=throttled)
        for attempt, jitter in enumerate(jitters, start=1)
    ]


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None or now.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def within_deadline(policy: RetryPolicy, started: float, now: float, delay: float) -> bool:
    """True if waiting ``delay`` more seconds keeps the request inside its deadline."""
    return now + delay - started <= policy.deadline_seconds
