"""The deliver pump's consumer on the real broker: a rewind keeps what the pump holds."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.consumer import ChangesConsumer, Partition, Record
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from tests.runtime.conftest import wait_until

pytestmark = pytest.mark.integration


class Assignments:
    """The rebalance handler: remembers what the group assigned."""

    def __init__(self) -> None:
        self.assigned: set[Partition] = set()

    async def partitions_revoked(self, revoked: set[Partition]) -> None:
        self.assigned -= revoked

    async def partitions_assigned(self, assigned: set[Partition]) -> None:
        self.assigned |= assigned


async def one_partition(bootstrap: str, prefix: str) -> tuple[KafkaSettings, str]:
    """Settings with one partition per topic, and the Account changes topic, made."""
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=1,
        consumer_group=f"{prefix}-deliver",
        consumer_session_timeout_seconds=3,
    )
    await ensure_topics(kafka, sfamp_topics(kafka, ["Account"]))
    return kafka, TopicNames(prefix).changes("Account")


async def send(kafka: KafkaSettings, topic: str, count: int) -> None:
    async with ChangeProducer(kafka) as producer:
        await producer.send_all([(topic, b"001", b"{}") for _ in range(count)])


async def fetch_offsets(consumer: ChangesConsumer, count: int) -> list[int]:
    """The offsets of the next ``count`` records, waiting up to 30 s for them."""
    found: list[Record] = []
    deadline = time.monotonic() + 30
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} records arrived"
        batch = await consumer.fetch(timeout_seconds=0.5, max_records=100, until=asyncio.Event())
        for records in batch.values():
            found.extend(records)
    return [record.offset for record in found[:count]]


async def test_a_rewind_goes_on_after_the_run_the_caller_holds(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    kafka, topic = await one_partition(kafka_bootstrap, topic_prefix)
    await send(kafka, topic, 10)
    consumer = ChangesConsumer(kafka)
    await consumer.start(TopicNames(topic_prefix).changes_pattern, Assignments())
    try:
        assert await fetch_offsets(consumer, 10) == list(range(10))
        tp = Partition(topic, 0)
        # Nothing committed: a rewind reads from the beginning, unless the caller already
        # holds the run that starts there.
        assert await consumer.rewind({tp}, lambda: {tp: (0, 10)}) == set()
        await send(kafka, topic, 1)
        assert await fetch_offsets(consumer, 1) == [10], "the held run was read again"
        # From elsewhere: read it all again, and the caller is told to drop what it holds.
        assert await consumer.rewind({tp}, lambda: {tp: (3, 11)}) == {tp}
        assert await fetch_offsets(consumer, 11) == list(range(11))
        assert await consumer.rewind({tp}) == set()
        assert await fetch_offsets(consumer, 1) == [0]
    finally:
        await consumer.stop(within=2)


async def test_the_next_fetch_is_asked_for_before_the_caller_works_on_a_batch(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A fetch that drains a partition returns once aiokafka has asked for its next
    records, so that the broker answers while the pump works on the batch."""
    kafka, topic = await one_partition(kafka_bootstrap, topic_prefix)
    tp = Partition(topic, 0)
    consumer = ChangesConsumer(kafka)
    await consumer.start(TopicNames(topic_prefix).changes_pattern, Assignments())
    client = consumer._consumer._client  # aiokafka's: its connections' requests on the wire

    def asked() -> int:
        return sum(len(conn._requests) for conn in client._conns.values())

    try:
        await send(kafka, topic, 10)
        assert await fetch_offsets(consumer, 10) == list(range(10))
        await send(kafka, topic, 10)
        # Wait until aiokafka holds the new records: the next fetch takes them at once.
        await wait_until(
            lambda: consumer.highwater(tp) == 20 and not asked(),
            interval=0.01,
            what="aiokafka to hold the new records with no request on the wire",
        )
        batch = await consumer.fetch(timeout_seconds=0.5, max_records=100, until=asyncio.Event())
        assert [record.offset for record in batch[tp]] == list(range(10, 20))
        # Checked before any other await: the request for what follows is on its way.
        assert asked(), "aiokafka had not asked for the drained partition again"
    finally:
        await consumer.stop(within=2)
