"""A read that ends early (its write failed, it was stopped) stops reading pages before
its Bulk job is deleted: no page reader is left running until the garbage collector finds
it, reading a job that is gone. A second stop while a snapshot stops reading still stops
the batches it has in flight to Amplitude."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.errors import KafkaUnavailableError
from pipeline.kafka.records import ResyncRequest
from pipeline.kafka.topics import TopicNames
from pipeline.runtime import resync
from pipeline.runtime.backfill import ReadOptions, run_backfill
from pipeline.runtime.backfill.ahead import ReadAhead
from pipeline.runtime.mapping_file import MappingVersion
from pipeline.runtime.mapping_source import MappingHolder
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.resync import Resyncs
from pipeline.runtime.retry import Backoff
from pipeline.runtime.salesforce_reads import SchemaCache
from pipeline.runtime.state import ServiceState
from pipeline.salesforce.client import SalesforceClient
from tests.backfill.conftest import Sandboxes, mapping
from tests.runtime.conftest import wait_until
from tests.support.events import WAIT_SECONDS, ended, happened

READER = "ReadAhead._read"  # the coroutine of a reader's task


def page_readers() -> list[asyncio.Task[Any]]:
    """The running tasks that read the next page ahead (``ReadAhead``)."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == READER
    ]


class DeletesWatched(httpx.AsyncBaseTransport):
    """Real HTTP; notes how many page readers still run when a Bulk job is deleted."""

    def __init__(self) -> None:
        self._http = httpx.AsyncHTTPTransport()
        self.readers_at_delete: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE" and "/jobs/query/" in request.url.path:
            self.readers_at_delete.append(len(page_readers()))
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


class KafkaDown:
    """A producer whose every write fails, as with the brokers gone."""

    async def send_all(self, records: Sequence[Any]) -> None:
        raise KafkaUnavailableError("the brokers are gone")

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        raise KafkaUnavailableError("the brokers are gone")


async def test_a_resync_whose_write_fails_stops_reading_before_it_deletes_the_job(
    sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its next attempt (a new job, a new reader) waits past the test's end.
    monkeypatch.setattr(resync, "Backoff", lambda **_: Backoff(first=600.0, ceiling=600.0))
    await sandboxes.seed("Account", 3_000)
    transport = DeletesWatched()
    state = ServiceState(role="ingest")
    settings = sandboxes.settings().salesforce
    async with SalesforceClient.from_settings(settings, transport=transport) as sf:
        config = mapping()
        resyncs = Resyncs(
            MappingHolder(MappingVersion(config, "file:mapping.json")),
            sf,
            KafkaDown(),  # type: ignore[arg-type]
            TopicNames("t"),
            SchemaCache(sf.rest),
            state,
            Metrics(),
        )
        # Bulk, three pages: the next page is being read when the first batch's write fails.
        resyncs.read_options = ReadOptions(rest_max_records=0, max_records=1_000, batch_rows=1_000)
        resyncs.start(ResyncRequest("Account", "gap_overflow", requested_at_ms=1))
        try:
            await wait_until(
                lambda: "error" in state.resyncs[-1], what="the re-sync's first attempt to fail"
            )
            # The attempt's error is logged and it waits before the next one.
            assert "brokers are gone" in state.resyncs[-1]["error"]
            assert transport.readers_at_delete == [0], (
                f"page readers still ran when the job was deleted: {transport.readers_at_delete}"
            )
            assert not page_readers(), "a page reader runs on after the re-sync failed"
            assert not sandboxes.salesforce.state.jobs.jobs, "the re-sync left its job behind"
        finally:
            await resyncs.cancel_all()


def in_a_reader() -> bool:
    """True inside a ``ReadAhead``'s reader task."""
    task = asyncio.current_task()
    return task is not None and getattr(task.get_coro(), "__qualname__", "") == READER


def deliveries() -> list[asyncio.Task[Any]]:
    """The running tasks that deliver a backfill's batch to Amplitude."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "deliver" and not task.done()
    ]


async def test_a_second_stop_while_the_snapshot_stops_reading_still_stops_its_deliveries(
    sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sandboxes.seed("Account", 3_000)
    sandboxes.amplitude.state.latency.ms = 20_000  # every batch sent stays in flight
    closing, release = asyncio.Event(), asyncio.Event()
    close = ReadAhead.aclose

    async def held_close(self: ReadAhead[Any]) -> None:
        """The snapshot reader's first close waits for ``release``: the second stop lands
        then. (The page readers' closes run in the tasks of the readers above them.)"""
        if not closing.is_set() and not in_a_reader():
            closing.set()
            try:
                async with asyncio.timeout(WAIT_SECONDS):
                    await release.wait()
            finally:
                await close(self)
        await close(self)

    monkeypatch.setattr(ReadAhead, "aclose", held_close)
    backfill = asyncio.create_task(
        run_backfill(
            sandboxes.settings(), mapping(), checkpoint_path=tmp_path / "c.json",
            options=ReadOptions(rest_max_records=0, max_records=1_000, batch_rows=500),
        )
    )  # fmt: skip
    try:
        await wait_until(lambda: len(deliveries()) >= 2, what="two batches in flight")
        backfill.cancel()
        await happened(closing, "the snapshot's reader close", WAIT_SECONDS)
        backfill.cancel()  # the second stop, while the reader closes
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await ended(backfill, "the backfill stopped twice", WAIT_SECONDS)
        assert not deliveries(), "batches were still being sent after the run stopped"
    finally:
        for task in deliveries():
            task.cancel()
