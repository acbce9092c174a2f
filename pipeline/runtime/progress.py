"""Progress of a run that reads objects one by one (a backfill, a reconcile): what a caller
shows it through, and the counting behind its log lines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar, runtime_checkable

import structlog

ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
T = TypeVar("T")

log = structlog.get_logger(__name__)

# How often a running backfill or reconcile lets its progress write a line that is due.
TICK_SECONDS = 1.0


class ObjectProgress(Protocol[ItemT_contra]):
    """What the caller shows while a run reads objects (a rich bar, log lines, /status):
    ``found`` is what the rows gave (identifications sent, properties that differ), and
    ``item`` the object's summary. ``done`` is what a stopped run had already read of
    the object when this one resumed it (of ``total``, the whole object's count)."""

    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None: ...

    def advance(self, sfdc_object: str, rows: int, found: int, /) -> None: ...

    def catching_up(self, sfdc_object: str, /) -> None:
        """Every row is read: the catch-up rounds run now (their lines say what they find)."""

    def finish_object(self, item: ItemT_contra, /) -> None: ...


@runtime_checkable
class Ticking(Protocol):
    """A progress that writes lines on a clock: ``tick()`` is called about once a second
    while a run works, so that a line that is due is written even when nothing advanced
    (a slow Amplitude holds every batch in flight)."""

    def tick(self) -> None: ...


async def ticking(progress: object, work: Coroutine[Any, Any, T]) -> T:
    """``work``, with ``progress.tick()`` every :data:`TICK_SECONDS` meanwhile when the
    progress is :class:`Ticking` (the ticks stop with the work, however it ends)."""
    if not isinstance(progress, Ticking):
        return await work

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                progress.tick()
            except Exception as exc:  # noqa: BLE001 - a progress line never stops the run
                log.warning("progress_line_failed", reason=f"{type(exc).__name__}: {exc}")

    ticker = asyncio.create_task(tick())
    try:
        return await work
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


class IntervalCounter:
    """An object's rows and what they gave, counted since its start, and a progress line
    whenever one is due: one per ``interval``, on an advance or on a tick; with an interval
    of 0, one per advance and none on ticks. Subclasses write the line (:meth:`_line`).

    ``_done`` is what a stopped run read of the object before this one resumed it: the
    rows read so far are ``_done + _rows``, while the rate counts this run's alone."""

    def __init__(
        self, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._started = self._last = 0.0
        self._rows = self._found = self._done = 0
        self._total: int | None = None
        self._object: str | None = None

    def _start(self, sfdc_object: str, total: int | None, done: int = 0) -> dict[str, Any]:
        """Count from here; answers the object's start line's fields (``already_read``
        only for a resumed object)."""
        self._started = self._last = self._clock()
        self._rows = self._found = 0
        self._done = done
        self._total = total
        self._object = sfdc_object
        already = {"already_read": done} if done else {}
        return {"object": sfdc_object, "total": total, **already}

    def _rate_and_eta(self, now: float) -> tuple[float, float | None]:
        """This run's rows per second, and the seconds left at that rate (None: unknown)."""
        rate = self._rows / max(now - self._started, 1e-6)
        if self._total is None or rate <= 0:
            return rate, None
        return rate, max(0, self._total - self._done - self._rows) / rate

    def _finish(self) -> None:
        self._object = None

    def catching_up(self, sfdc_object: str, /) -> None:
        """Nothing to add: each catch-up round writes its own line."""

    def advance(self, sfdc_object: str, rows: int, found: int, /) -> None:
        self._rows += rows
        self._found += found
        self._line_if_due(sfdc_object)

    def tick(self) -> None:
        if self._object is not None and self._interval > 0:
            self._line_if_due(self._object)

    def _line_if_due(self, sfdc_object: str) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        self._line(sfdc_object, now)

    def _line(self, sfdc_object: str, now: float) -> None:
        raise NotImplementedError
