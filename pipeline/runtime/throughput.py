"""Changes ingested and groups flushed per minute over the last hour, for /status.

Prometheus holds the same counts as counters (``sfamp_events_ingested``,
``sfamp_flush_groups``) for dashboards; this small history lets the console's
Status page draw the last hour without one. Pure: time is passed in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

Kind = Literal["changes_ingested", "groups_flushed"]
KINDS: Final[tuple[Kind, ...]] = ("changes_ingested", "groups_flushed")
MINUTES: Final = 60


class MinuteCounts:
    """Counts per UTC minute; minutes older than the window are dropped as time moves on."""

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._counts: dict[int, dict[Kind, int]] = {}

    def add(self, kind: Kind, count: int, now_s: float) -> None:
        if count <= 0:
            return
        minute = int(now_s // 60)
        bucket = self._counts.setdefault(minute, dict.fromkeys(KINDS, 0))
        bucket[kind] += count
        for old in [m for m in self._counts if m <= minute - self.minutes]:
            del self._counts[old]

    def last_hour(self, now_s: float) -> list[dict[str, Any]]:
        """One entry per minute, oldest first, ending with the current (partial) minute."""
        current = int(now_s // 60)
        entries = []
        for minute in range(current - self.minutes + 1, current + 1):
            bucket = self._counts.get(minute, {})
            start = datetime.fromtimestamp(minute * 60, UTC)
            entries.append(
                {"minute": start.isoformat()} | {kind: bucket.get(kind, 0) for kind in KINDS}
            )
        return entries
