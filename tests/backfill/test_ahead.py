"""ReadAhead: the reader's source is closed however the read ends; in_turn: the next begun
while this one is worked on, and nothing begun left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.runtime.backfill.ahead import ReadAhead, in_turn
from tests.support.events import ended, happened


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
    (with a timeout) until the next ``ahead`` begins have started, or ended for
    ``fail_work``."""

    def __init__(
        self,
        count: int,
        fail_begin: int | None = None,
        fail_work: int | None = None,
        ahead: int = 1,
    ) -> None:
        self.count, self.fail_begin, self.fail_work = count, fail_begin, fail_work
        self.ahead = ahead
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
        events = self.begun if begun == self.fail_work else self.started
        for later in range(begun + 1, min(begun + 1 + self.ahead, self.count)):
            await happened(events[later], f"begin {later} during work {begun}")
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


async def test_up_to_ahead_turns_are_begun_while_this_one_is_worked_on() -> None:
    turns = Turns(4, ahead=2)
    await in_turn(4, turns.begin, turns.work, turns.abandon, turn=turns.turn, ahead=2)

    assert turns.log == [
        "turn 0", "begin 0", "begin 1", "begin 2", "work 0",
        "turn 1", "begin 3", "work 1",
        "turn 2", "work 2",
        "turn 3", "work 3",
    ]  # fmt: skip
    assert turns.abandoned == []


async def test_every_turn_begun_that_never_comes_is_abandoned() -> None:
    turns = Turns(4, fail_work=0, ahead=2)
    with pytest.raises(ValueError, match="work 0 failed"):
        await in_turn(4, turns.begin, turns.work, turns.abandon, ahead=2)

    assert sorted(turns.abandoned) == [1, 2]
    assert "begin 3" not in turns.log


async def test_ahead_below_one_is_refused() -> None:
    turns = Turns(2)
    with pytest.raises(ValueError, match="ahead must be at least 1"):
        await in_turn(2, turns.begin, turns.work, turns.abandon, ahead=0)


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
    await happened(started, "begin 1")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert abandoned == []  # nothing was begun: nothing to give back
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_turn_cancelled_while_it_waits_for_its_begin_gives_back_the_ones_after() -> None:
    waiting, later_begun, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
    second_turn = asyncio.Event()

    async def begin(index: int) -> int:
        if index == 1:
            waiting.set()
            await never.wait()
        if index == 2:
            later_begun.set()
        return index

    async def work(begun: int) -> None:
        return None  # turn 1 comes at once, and waits for its begin

    abandoned: list[int] = []

    async def abandon(begun: int) -> None:
        abandoned.append(begun)

    def turn(index: int) -> None:
        if index == 1:
            second_turn.set()

    task = asyncio.create_task(in_turn(3, begin, work, abandon, turn, ahead=2))
    for event, what in ((waiting, "begin 1"), (later_begun, "begin 2"), (second_turn, "turn 1")):
        await happened(event, what)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert abandoned == [2]  # begin 1 was cancelled; what begin 2 returned is given back
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_begin_that_answered_just_before_a_cancellation_is_given_back() -> None:
    answered = asyncio.Event()
    abandoned: list[int] = []

    async def begin(index: int) -> int:
        if index == 1:
            answered.set()  # wakes the canceller before in_turn takes the answer
        return index

    async def work(begun: int) -> None:
        return None

    async def abandon(begun: int) -> None:
        abandoned.append(begun)

    running = asyncio.create_task(in_turn(3, begin, work, abandon, ahead=2))

    async def cancel_once_answered() -> None:
        await answered.wait()
        running.cancel()

    canceller = asyncio.create_task(cancel_once_answered())
    await ended(asyncio.gather(running, canceller, return_exceptions=True), "the cancelled run")

    assert running.cancelled()
    assert sorted(abandoned) == [1, 2], "a begin's answer was neither worked on nor given back"


async def test_giving_back_is_seen_through_when_the_run_is_cancelled_again() -> None:
    working, last_begun = asyncio.Event(), asyncio.Event()
    giving_back, release = asyncio.Event(), asyncio.Event()
    abandoned: list[int] = []

    async def begin(index: int) -> int:
        if index == 3:
            last_begun.set()
        return index

    async def work(begun: int) -> None:
        working.set()
        await asyncio.Event().wait()  # until cancelled

    async def abandon(begun: int) -> None:
        giving_back.set()
        await release.wait()
        abandoned.append(begun)

    running = asyncio.create_task(in_turn(4, begin, work, abandon, ahead=3))
    for event, what in ((working, "work 0"), (last_begun, "begin 3")):
        await happened(event, what)
    running.cancel()
    await happened(giving_back, "an abandon after the first cancellation")
    running.cancel()  # a second stop, while the first gives back
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await ended(running, "the run cancelled twice")

    assert sorted(abandoned) == [1, 2, 3]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_an_abandon_that_fails_keeps_neither_the_others_nor_the_first_error() -> None:
    turns = Turns(4, fail_work=0, ahead=3)
    real_abandon = turns.abandon

    async def abandon(begun: int) -> None:
        if begun == 1:
            raise RuntimeError("abandon 1 failed")
        await real_abandon(begun)

    with pytest.raises(ValueError, match="work 0 failed"):
        await in_turn(4, turns.begin, turns.work, abandon, ahead=3)

    assert sorted(turns.abandoned) == [2, 3]
