"""Which re-sync requests read an object again, and which are already being answered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipeline.kafka.records import ResyncRequest
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.resync import Resyncs
from pipeline.runtime.state import ServiceState
from tests.runtime.conftest import wait_until


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.on_send: Any = None

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.sent.append((topic, key, value))
        if self.on_send is not None:
            self.on_send()


class GatedResyncs(Resyncs):
    """Re-syncs whose reads of the object are counted and held until released."""

    def __init__(self, producer: RecordingProducer) -> None:
        salesforce: Any = SimpleNamespace(rest=None)
        state = ServiceState(role="ingest")
        topics = TopicNames("t")
        super().__init__(None, salesforce, producer, topics, None, state, Metrics())  # type: ignore[arg-type]
        self.reads = 0
        self.release = asyncio.Event()

    async def _read_into_kafka(self, sfdc_object: str) -> int:
        self.reads += 1
        await self.release.wait()
        return 1


async def test_the_same_request_again_is_not_read_again() -> None:
    resyncs = GatedResyncs(RecordingProducer())
    request = ResyncRequest("Account", "gap_overflow", requested_at_ms=1)
    resyncs.start(request)
    await wait_until(lambda: resyncs.reads == 1, what="the first read")
    # Every resubscription restarts the stored requests: the running one answers them.
    resyncs.start(request)
    resyncs.start(request)
    resyncs.release.set()
    await wait_until(lambda: resyncs.done == 1, what="the re-sync to finish")
    assert resyncs.reads == 1


async def test_a_request_made_while_the_tombstone_is_written_is_kept_and_answered() -> None:
    producer = RecordingProducer()
    resyncs = GatedResyncs(producer)
    first = ResyncRequest("Account", "gap_overflow", requested_at_ms=1)
    newer = ResyncRequest("Account", "gap_overflow", requested_at_ms=2)
    resyncs.release.set()

    def overflow_again() -> None:
        producer.on_send = None
        resyncs.start(newer)  # arrives while the first tombstone is being written

    producer.on_send = overflow_again
    resyncs.start(first)
    await wait_until(lambda: resyncs.done == 1, what="the re-syncs to finish")
    assert resyncs.reads == 2
    key, value = newer.encode()
    # The tombstone also removed the newer request's record: it is written again, then
    # removed once answered.
    assert [(k, v) for _, k, v in producer.sent] == [(key, None), (key, value), (key, None)]
