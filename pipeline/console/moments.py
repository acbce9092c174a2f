"""Times as the console shows them: the UTC clock time and how long ago (or how soon).

Pure: the ISO 8601 time and "now" in, the text out. The page shows ``04:28:25 UTC
(12s ago)``, the date only when it is not today's; the exact time stays in the
``<time datetime>`` element and its title, for a hover or a screen reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.kafka.inspect import format_duration


@dataclass(frozen=True, slots=True)
class Moment:
    iso: str  # as given: the exact time
    text: str  # "04:28:25 UTC (12s ago)"


def moment(value: str, now: float) -> Moment | None:
    """``value`` (ISO 8601) as seen at ``now`` (seconds since the epoch); None when it
    is not a time (the page then shows it as it is)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    today = datetime.fromtimestamp(now, UTC).date()
    clock = at.strftime("%H:%M:%S UTC")
    if at.date() != today:
        clock = f"{at.date().isoformat()} {clock}"
    return Moment(value, f"{clock} ({relative(at.timestamp() - now)})")


def relative(seconds: float) -> str:
    """``12s ago``, ``in 3m``, ``now`` (under a second either way)."""
    if abs(seconds) < 1:
        return "now"
    span = format_duration(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def moment_of_ms(ms: int) -> str:
    """A time in ms since the epoch as ISO 8601 (UTC), for :func:`moment`."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
