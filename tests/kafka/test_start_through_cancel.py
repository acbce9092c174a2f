"""A cancel does not cut an aiokafka client's start short (pipeline/kafka/connection.py):
aiokafka leaves its bootstrap connection open when its start is cancelled midway. Nor is
a cancel lost in a consumer's stop, which swallows one that lands meanwhile."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.config.settings import KafkaSettings
from pipeline.kafka import compacted
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.connection import start_through_cancel, stop_through_cancel
from tests.support.events import delivered


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


class SwallowingStop:
    """Stops as aiokafka's consumer does: it awaits its own cancelled work under
    ``suppress(CancelledError)`` (``Fetcher.close``), so a cancel of whoever awaits the
    stop that lands meanwhile is lost; ``stopping`` is set once the stop began."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = False

    async def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.release.wait()
        self.stopped = True


async def test_a_cancel_that_lands_in_a_stop_is_kept() -> None:
    client = SwallowingStop()
    caller = asyncio.create_task(stop_through_cancel(client, within=10))
    await client.stopping.wait()
    caller.cancel()
    await delivered()  # the cancel lands while the stop runs
    client.release.set()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, timeout=5)
    assert client.stopped, "the stop was cut short"


@pytest.mark.integration
async def test_a_table_read_cancelled_as_its_consumer_stops_is_cancelled(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, sfamp_topics(settings, []))
    swallowing = SwallowingStop()
    real_stop = AIOKafkaConsumer.stop

    async def stop(consumer: AIOKafkaConsumer) -> None:
        await swallowing.stop()  # as aiokafka's fetcher does, before the real stop
        await real_stop(consumer)

    monkeypatch.setattr(AIOKafkaConsumer, "stop", stop)
    reading = asyncio.create_task(compacted.read_table(settings, f"{topic_prefix}.config"))
    await asyncio.wait_for(swallowing.stopping.wait(), timeout=30)
    reading.cancel()
    await delivered()  # the cancel lands while the stop runs
    swallowing.release.set()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reading, timeout=30)
