"""Produce -> consume -> commit -> resume through the session's real broker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.topics import TopicNames
from tests.conftest import docker_engine_answers

pytestmark = pytest.mark.integration


async def _consume(bootstrap: str, topic: str, group: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < n:
            batch = await consumer.getmany(timeout_ms=5000, max_records=n - len(values))
            assert batch, "no records arrived within 5 s"
            for records in batch.values():
                values += [r.value for r in records]
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def test_produce_consume_commit_resume(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    created = await ensure_topics(settings, sfamp_topics(settings, ["Account"]))
    topic = TopicNames(topic_prefix).changes("Account")
    assert topic in created

    async with ChangeProducer(settings) as producer:
        await producer.send_all(
            [(topic, f"id{i % 3}".encode(), f"m{i}".encode()) for i in range(10)]
        )

    group = f"{topic_prefix}-group"
    first = await _consume(kafka_bootstrap, topic, group, 4)
    # The committed offsets make a new consumer of the same group resume after `first`.
    rest = await _consume(kafka_bootstrap, topic, group, 6)
    assert sorted(first + rest) == sorted(f"m{i}".encode() for i in range(10))
    assert not set(first) & set(rest)


async def test_ensure_topics_is_idempotent(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    specs = sfamp_topics(settings, ["Account", "Contact"])
    assert len(await ensure_topics(settings, specs)) == len(specs) == 6  # 4 control, 2 changes
    assert await ensure_topics(settings, specs) == []


async def test_changes_topic_has_configured_partitions(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3
    )
    await ensure_topics(settings, sfamp_topics(settings, ["Account"]))
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(TopicNames(topic_prefix).changes("Account"))
        if partitions is None:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(TopicNames(topic_prefix).changes("Account"))
        assert partitions == {0, 1, 2}
        tp = TopicPartition(TopicNames(topic_prefix).changes("Account"), 0)
        assert (await consumer.end_offsets([tp]))[tp] == 0
    finally:
        await consumer.stop()


@pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers")
def test_testcontainers_path_is_used_when_docker_answers(kafka_bootstrap: str) -> None:
    # With an engine, the session broker comes from testcontainers (mapped port), not tansu.
    assert kafka_bootstrap
