"""ReadAhead: the reader's source is closed however the read ends; in_turn: the next begun
while this one is worked on, and nothing begun left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.runtime.backfill.ahead import ReadAhead, in_turn


async def test_a_read_closed_while_its_reader_waits_closes_the_source() -> None:
    closed = asyncio.Event()

    async def pages() -> AsyncIterator[int]:
        try:
            for page in range(10):
                yield page
        finally:
            closed.set()  # where a Bulk job's delete runs

    ahead = ReadAhead(pages())
    async for page in ahead:
        assert page == 0
        break  # the reader now holds the next page, waiting for room
    await ahead.aclose()

    assert closed.is_set(), "the source was left open (its clean-up never ran)"


class Turns:
    """What ``in_turn`` was asked to do, in order, for ``count`` turns; each work waits
    (with a timeout) until the next begin has started, or ended for ``fail_work``."""

    def __init__(
        self, count: int, fail_begin: int | None = None, fail_work: int | None = None
    ) -> None:
        self.count, self.fail_begin, self.fail_work = count, fail_begin, fail_work
        self.log: list[str] = []
        self.abandoned: list[int] = []
        self.started = [asyncio.Event() for _ in range(count)]
        self.begun = [asyncio.Event() for _ in range(count)]

    async def begin(self, index: int) -> int:
        self.log.append(f"begin {index}")
        self.started[index].set()
        if index == self.fail_begin:
            raise ValueError(f"begin {index} failed")
        self.begun[index].set()
        return index

    async def work(self, begun: int) -> None:
        if begun + 1 < self.count:  # the next begin runs meanwhile
            events = self.begun if begun == self.fail_work else self.started
            await asyncio.wait_for(events[begun + 1].wait(), 10)
        if begun == self.fail_work:
            raise ValueError(f"work {begun} failed")
        self.log.append(f"work {begun}")

    async def abandon(self, begun: int) -> None:
        self.abandoned.append(begun)

    def turn(self, index: int) -> None:
        self.log.append(f"turn {index}")


async def test_the_next_is_begun_while_this_one_is_worked_on_and_the_work_keeps_its_order() -> None:
    turns = Turns(3)
    await in_turn(3, turns.begin, turns.work, turns.abandon, turn=turns.turn)

    assert turns.log == [
        "turn 0", "begin 0", "begin 1", "work 0",
        "turn 1", "begin 2", "work 1",
        "turn 2", "work 2",
    ]  # fmt: skip
    assert turns.abandoned == []


async def test_a_failed_begin_fails_at_its_own_turn() -> None:
    turns = Turns(3, fail_begin=1)
    with pytest.raises(ValueError, match="begin 1 failed"):
        await in_turn(3, turns.begin, turns.work, turns.abandon, turn=turns.turn)

    assert turns.log == ["turn 0", "begin 0", "begin 1", "work 0", "turn 1"]


async def test_what_was_begun_for_a_turn_that_never_comes_is_abandoned() -> None:
    turns = Turns(3, fail_work=0)
    with pytest.raises(ValueError, match="work 0 failed"):
        await in_turn(3, turns.begin, turns.work, turns.abandon)

    assert turns.abandoned == [1]
    assert "begin 2" not in turns.log


async def test_a_begin_still_running_when_the_work_is_cancelled_is_cancelled() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def begin(index: int) -> int:
        if index == 1:
            started.set()
            await never.wait()
        return index

    async def work(begun: int) -> None:
        await never.wait()

    abandoned: list[int] = []

    async def abandon(begun: int) -> None:
        abandoned.append(begun)

    task = asyncio.create_task(in_turn(2, begin, work, abandon))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert abandoned == []  # nothing was begun: nothing to give back
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
