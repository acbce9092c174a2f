"""Clean-up seen through a stop: awaited to its end however often the wait is
cancelled, and the stop never lost; work a stop lets end for a moment only."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from pipeline.runtime.tasks import let_end, seen_through
from tests.support.events import WAIT_SECONDS, delivered, happened


class CleanUp:
    """A clean-up that runs until ``release`` is set, then ends or raises ``fails``;
    ``cancelled`` once cancelled before that."""

    def __init__(self, fails: BaseException | None = None) -> None:
        self.running, self.release, self.ended = asyncio.Event(), asyncio.Event(), False
        self.cancelled = False
        self.fails = fails

    async def __call__(self) -> None:
        self.running.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fails is not None:
            raise self.fails
        self.ended = True


async def stopped(clean_up: CleanUp, stops: int) -> asyncio.Task[None]:
    """``seen_through(clean_up())`` in a task, cancelled ``stops`` times while it runs,
    then the clean-up released; the task, ended."""
    task = asyncio.create_task(seen_through(clean_up()))
    await happened(clean_up.running, "the clean-up starting")
    for _ in range(stops):
        task.cancel()
        await delivered()  # before the next
    clean_up.release.set()
    await asyncio.wait([task], timeout=WAIT_SECONDS)
    assert task.done(), f"seen_through did not end within {WAIT_SECONDS:g} s"
    return task


async def test_a_clean_up_stopped_twice_ends_and_the_stop_goes_on() -> None:
    clean_up = CleanUp()
    task = await stopped(clean_up, stops=2)

    assert clean_up.ended, "the clean-up was cut short"
    assert task.cancelled(), "the stop was lost"


async def test_a_clean_up_that_fails_after_a_stop_keeps_the_stop_and_logs_the_failure() -> None:
    clean_up = CleanUp(fails=TimeoutError("no answer"))
    with capture_logs() as logs:
        task = await stopped(clean_up, stops=1)

    assert task.cancelled(), "the clean-up's error replaced the stop"
    assert [entry["event"] for entry in logs] == ["clean_up_failed_at_stop"]


async def test_a_stop_that_lands_as_the_clean_up_ends_is_kept() -> None:
    clean_up = CleanUp()
    task = asyncio.create_task(seen_through(clean_up()))
    await happened(clean_up.running, "the clean-up starting")
    clean_up.release.set()  # the clean-up ends in the loop's next turn...
    task.cancel()  # ...and the stop lands before seen_through wakes up
    await asyncio.wait([task], timeout=WAIT_SECONDS)

    assert clean_up.ended
    assert task.cancelled(), "the stop was taken for the clean-up's own and lost"


async def test_without_a_stop_what_the_clean_up_raises_comes_out() -> None:
    clean_up = CleanUp(fails=ValueError("refused"))
    clean_up.release.set()
    with pytest.raises(ValueError, match="refused"):
        await seen_through(clean_up())


async def let_ended(work: CleanUp, within: float, stops: int) -> asyncio.Task[None]:
    """``let_end(work(), within=within)`` in a task, cancelled ``stops`` times while the
    work runs; the task, ended (the work is not released)."""
    task = asyncio.create_task(let_end(work(), within=within))
    await happened(work.running, "the work starting")
    for _ in range(stops):
        task.cancel()
        await delivered()
    await asyncio.wait([task], timeout=WAIT_SECONDS)
    assert task.done(), f"let_end did not end within {WAIT_SECONDS:g} s"
    return task


async def released_after_a_stop(work: CleanUp) -> asyncio.Task[None]:
    """``let_end(work(), ...)`` in a task with a long grace, cancelled once while the work
    runs, then the work released; the task, ended."""
    task = asyncio.create_task(let_end(work(), within=10 * WAIT_SECONDS))
    await happened(work.running, "the work starting")
    task.cancel()
    await delivered()
    work.release.set()
    await asyncio.wait([task], timeout=WAIT_SECONDS)
    assert task.done(), "the work ended but let_end did not"
    return task


async def test_a_stop_lets_work_that_ends_within_the_grace_end_by_itself() -> None:
    work = CleanUp()
    task = await released_after_a_stop(work)

    assert work.ended, "the work was cancelled within its grace"
    assert task.cancelled(), "the stop was lost"


async def test_a_stop_cancels_work_still_running_after_the_grace() -> None:
    work = CleanUp()
    task = await let_ended(work, within=0.05, stops=1)

    assert work.cancelled, "the work was left running"
    assert task.cancelled(), "the stop was lost"


async def test_a_second_stop_cuts_the_grace_short() -> None:
    work = CleanUp()
    task = await let_ended(work, within=10 * WAIT_SECONDS, stops=2)

    assert work.cancelled, "the work was left running"
    assert task.cancelled(), "the stop was lost"


async def test_without_a_stop_let_end_gives_what_the_work_raises() -> None:
    work = CleanUp(fails=ValueError("refused"))
    work.release.set()
    with pytest.raises(ValueError, match="refused"):
        await let_end(work(), within=WAIT_SECONDS)


async def test_what_the_work_raises_within_the_grace_is_logged_and_the_stop_kept() -> None:
    work = CleanUp(fails=TimeoutError("no answer"))
    with capture_logs() as logs:
        task = await released_after_a_stop(work)

    assert task.cancelled(), "the work's error replaced the stop"
    assert [entry["event"] for entry in logs] == ["clean_up_failed_at_stop"]
