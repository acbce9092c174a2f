"""Reading ahead: the next item of an async iterator (a result page, a round's page) is
fetched by a task of its own while the caller works on the current one; the next few of a
run's objects are begun while the one before is worked on; and a chore (a Bulk job's
delete) done beside the work that follows it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, Generic, TypeVar

import structlog

from pipeline.runtime.tasks import seen_through

T = TypeVar("T")
log = structlog.get_logger(__name__)

# Objects of a backfill or reconcile opened (their Bulk query jobs created) before their
# turn: Salesforce runs those jobs while the object before them is read.
OBJECTS_AHEAD: Final = 3


async def prefetched(items: AsyncIterator[T], ahead: int = 1) -> AsyncGenerator[T]:
    """``items``, with up to ``ahead`` more read (from Salesforce) while this one is used.

    The reader task is owned here: it is cancelled and awaited when this generator ends
    or is closed, and its errors come out of it. A loop over it that may end early (an
    error, a stop, a ``yield`` inside it) holds it in ``contextlib.aclosing``: left open,
    the reader runs on until the garbage collector finds the generator, and a Bulk job
    deleted meanwhile is still being read.
    """
    reader = ReadAhead(items, ahead)
    try:
        async for item in reader:
            yield item
    finally:
        await reader.aclose()


class ReadAhead(Generic[T]):
    """``items`` read by a task begun at once, up to ``ahead`` more than were used.

    Iterate it once; the reader's errors come out of the iteration. Whoever makes
    one calls :meth:`aclose` however things end (it cancels and awaits the reader).
    """

    def __init__(self, items: AsyncIterator[T], ahead: int = 1) -> None:
        self._queue: asyncio.Queue[tuple[T] | BaseException | None] = asyncio.Queue(ahead)
        self._reader = asyncio.create_task(self._read(items))

    async def _read(self, items: AsyncIterator[T]) -> None:
        try:
            async for item in items:
                await self._queue.put((item,))
            await self._queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await self._queue.put(exc)
        finally:
            # Closed here, also when cancelled while holding an item nobody takes: its own
            # clean-up (a Bulk job's delete) runs now, while its HTTP client is still open.
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()

    async def __aiter__(self) -> AsyncIterator[T]:
        while (entry := await self._queue.get()) is not None:
            if isinstance(entry, BaseException):
                raise entry
            yield entry[0]

    async def aclose(self) -> None:
        self._reader.cancel()
        # The reader's own cancellation is its answer; one of the caller's goes on.
        await asyncio.gather(self._reader, return_exceptions=True)


async def beside(work: Coroutine[Any, Any, None], chore: Coroutine[Any, Any, None]) -> None:
    """``work`` with ``chore`` running meanwhile, then the end of ``chore``; a failed or
    cancelled ``work`` cancels it (and whatever it raised is dropped)."""
    task = asyncio.ensure_future(chore)
    try:
        await work
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    await task


async def in_turn(
    count: int,
    begin: Callable[[int], Coroutine[Any, Any, T]],
    work: Callable[[T], Awaitable[None]],
    abandon: Callable[[T], Awaitable[None]],
    turn: Callable[[int], None] = lambda index: None,
    *,
    ahead: int = 1,
) -> None:
    """``work(begin(i))`` for ``i`` in ``range(count)``, in order, with the ``begin`` of
    up to ``ahead`` turns after ``i`` running in tasks of their own meanwhile (opening
    the next objects while this one is read). ``turn(i)`` is told when turn ``i`` comes,
    before its ``begin`` is awaited.

    A ``begin`` error comes out at its own turn. When the work stops first (an error,
    a cancellation), every ``begin`` still running is cancelled, and what each one
    that ended returned goes to ``abandon``, all at once; that is seen through even
    when the run is cancelled again meanwhile, and an ``abandon`` that fails is
    logged (``turn_abandon_failed``) without keeping the others from theirs. Raises
    ValueError for ``ahead`` below 1.
    """
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, not {ahead}")
    following: deque[asyncio.Task[T]] = deque()  # the begins of the turns after this one
    try:
        for index in range(count):
            turn(index)
            if following:
                # Left in the queue until it has answered: cancelled meanwhile, it is
                # still cancelled (or given back) below.
                begun = await following[0]
                following.popleft()
            else:
                begun = await begin(index)
            for later in range(index + 1 + len(following), min(index + 1 + ahead, count)):
                following.append(asyncio.create_task(begin(later)))
            await work(begun)
    finally:
        await seen_through(_give_back(list(following), abandon))


async def _give_back(
    following: list[asyncio.Task[T]], abandon: Callable[[T], Awaitable[None]]
) -> None:
    for task in following:
        task.cancel()
    begun = await asyncio.gather(*following, return_exceptions=True)
    for failed in begun:
        if isinstance(failed, Exception):  # its turn, which would have raised it, never came
            log.info("turn_begin_failed", reason=repr(failed))
    ended = [done for done in begun if not isinstance(done, BaseException)]
    failures = await asyncio.gather(*map(abandon, ended), return_exceptions=True)
    for failure in failures:
        if isinstance(failure, BaseException):
            log.warning("turn_abandon_failed", reason=repr(failure))
