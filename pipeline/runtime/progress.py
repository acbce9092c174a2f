"""Progress of a run that reads objects one by one (a backfill, a reconcile): what a caller
shows it through, and the counting behind its log lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

ItemT_contra = TypeVar("ItemT_contra", contravariant=True)


class ObjectProgress(Protocol[ItemT_contra]):
    """What the caller shows while a run reads objects (a rich bar, log lines, /status):
    ``found`` is what the rows gave (identifications sent, properties that differ), and
    ``item`` the object's summary."""

    def start_object(self, sfdc_object: str, total: int | None, method: str) -> None: ...

    def advance(self, sfdc_object: str, rows: int, found: int, /) -> None: ...

    def finish_object(self, item: ItemT_contra, /) -> None: ...


class IntervalCounter:
    """An object's rows and what they gave, counted since its start, and whether a progress
    line is due: one per ``interval`` (a run's log lines name the events and fields)."""

    def __init__(
        self, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._started = self._last = 0.0
        self._rows = self._found = 0
        self._total: int | None = None

    def _start(self, total: int | None) -> None:
        self._started = self._last = self._clock()
        self._rows = self._found = 0
        self._total = total

    def _count(self, rows: int, found: int) -> float | None:
        """Add one advance; the clock's time when a progress line is due, else None."""
        self._rows += rows
        self._found += found
        now = self._clock()
        if now - self._last < self._interval:
            return None
        self._last = now
        return now
