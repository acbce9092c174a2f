"""Ending tasks whose clean-up must not be cut short by a stop, and stopping a run.

A stop is a cancellation, and a second one (the service's drain timeout, a
supervisor's) may follow the first. Clean-up that gives back what a run holds (a
Bulk job to delete, a request in flight) is awaited to its end however often the
wait is cancelled; the stop then goes on (``CancelledError``), never lost.

A command's run (a backfill, a reconcile) is stopped by a :class:`StopRequest` that
a signal handler sets; :func:`until_stopped` cancels the run then and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def finish(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` unless it is done, and wait until it has ended, even when this
    wait is cancelled in turn: its clean-up is over before the caller goes on."""
    if task.done():
        return
    task.cancel()
    stopped = await _ended(task)
    if not task.cancelled():
        task.exception()  # retrieved: this attempt is given up, whatever it raised
    if stopped:
        raise asyncio.CancelledError


async def let_end(work: Coroutine[Any, Any, None], *, within: float) -> None:
    """Await ``work``; cancelled meanwhile, let it run up to ``within`` more seconds to
    end by itself, cancel it if it has not, and raise ``CancelledError`` once it has
    ended. A later cancel cuts the grace short (two delivered in the same turn of the
    event loop count as one); what the work raised meanwhile is logged
    (``clean_up_failed_at_stop``). Otherwise it raises what ``work`` raises.

    For work that may be cancelled safely, and ends in bounded time once it is, such
    as a request over connections its client holds: a stop waits a moment for it,
    never its whole timeout.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task], timeout=within)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("clean_up_failed_at_stop", reason=repr(task.exception()))
        await finish(task)
        raise


async def seen_through(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end even when cancelled meanwhile, any number of times.

    Cancelled meanwhile, it raises ``CancelledError`` once ``work`` has ended: the stop
    wins over what ``work`` raised, which is logged (``clean_up_failed_at_stop``).
    Otherwise it raises what ``work`` raises. ``work`` must end by itself in bounded
    time.
    """
    task = asyncio.ensure_future(work)
    stopped = await _ended(task)
    if stopped:
        failed = None if task.cancelled() else task.exception()
        if failed is not None:
            log.warning("clean_up_failed_at_stop", reason=repr(failed))
        raise asyncio.CancelledError
    task.result()


async def _ended(task: asyncio.Future[Any]) -> bool:
    """Wait until ``task`` has ended; True when this wait was cancelled meanwhile (a
    cancellation of the caller, never of ``task``: ``asyncio.wait`` passes none on)."""
    stopped = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            stopped = True
    return stopped


class StopRequest:
    """Set from a signal handler: the run stops at once and keeps its checkpoint."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


async def until_stopped(work: Coroutine[Any, Any, None], stop: StopRequest | None) -> str | None:
    """Run ``work``; when ``stop`` is set first, cancel it and return the reason (a backfill's
    and a reconcile's: the caller logs it)."""
    task = asyncio.create_task(work)
    if stop is None:
        await task
        return None
    waiter = asyncio.create_task(stop.event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, waiter):
            pending.cancel()
        # The work leaves its finally blocks (in-flight deliveries cancelled) before we go on.
        await asyncio.gather(task, waiter, return_exceptions=True)
    if task.cancelled():
        return stop.reason
    task.result()
    return None
