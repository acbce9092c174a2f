"""A cancel does not cut an aiokafka client's start short (pipeline/kafka/connection.py):
aiokafka leaves its bootstrap connection open when its start is cancelled midway."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.kafka.connection import start_through_cancel


class Client:
    """Starts once ``answer`` is set: "connected" only if the start ran to its end;
    ``under_way`` is set once the start began."""

    def __init__(self, *, fails: bool = False) -> None:
        self.under_way = asyncio.Event()
        self.answer = asyncio.Event()
        self.connected = False
        self.fails = fails

    async def start(self) -> None:
        self.under_way.set()
        await self.answer.wait()
        if self.fails:
            raise OSError("refused")
        self.connected = True


async def test_a_cancel_waits_for_the_start_to_end_then_is_raised() -> None:
    client = Client()
    caller = asyncio.create_task(start_through_cancel(client))
    await client.under_way.wait()
    caller.cancel()
    client.answer.set()  # after the cancel: a start cut short would never see it

    with pytest.raises(asyncio.CancelledError):
        await caller
    assert client.connected, "the start ran to its end, so stop() reaches what it opened"


async def test_a_start_that_does_not_end_is_given_up_after_the_wait() -> None:
    client = Client()
    caller = asyncio.create_task(start_through_cancel(client, within=0.1))
    await client.under_way.wait()
    caller.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, timeout=5)
    assert not client.connected


async def test_a_start_that_fails_after_a_cancel_leaves_only_the_cancel() -> None:
    client = Client(fails=True)
    caller = asyncio.create_task(start_through_cancel(client))
    await client.under_way.wait()
    caller.cancel()
    client.answer.set()

    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_without_a_cancel_the_start_answers_as_it_does() -> None:
    failing = Client(fails=True)
    failing.answer.set()
    with pytest.raises(OSError, match="refused"):
        await start_through_cancel(failing)

    client = Client()
    client.answer.set()
    await start_through_cancel(client)
    assert client.connected
