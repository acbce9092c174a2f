"""Read and follow sfamp's compacted topics (``sfamp.replay``, ``sfamp.config``, ``sfamp.sent``).

These are read without a consumer group: every instance needs the whole
table, and group joins would only add latency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaUnavailableError
from pipeline.kafka.connection import (
    client_options,
    describe_failure,
    start_through_cancel,
    stop_through_cancel,
    unavailable,
)

Table = dict[bytes, tuple[bytes | None, int]]  # key -> (latest value, offset)
STOP_SECONDS = 2.0  # for a consumer stopped by a cancel (its start's, or its reader's)


async def _assigned(settings: KafkaSettings, topic: str) -> tuple[AIOKafkaConsumer, TopicPartition]:
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, metadata_max_age_ms=10_000
    )
    try:
        await start_through_cancel(consumer)
    except AIOKafkaError as exc:
        await stop_through_cancel(consumer, within=STOP_SECONDS)
        error = await unavailable(settings, exc)
        raise KafkaUnavailableError(f"cannot read {topic}: {error}") from exc
    except BaseException:  # cancelled while it connects (a signal): leave nothing open
        with contextlib.suppress(AIOKafkaError, OSError, TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):  # aiokafka's stop can lose a cancel
                await asyncio.shield(consumer.stop())
        raise
    return consumer, TopicPartition(topic, 0)


async def read_table(settings: KafkaSettings, topic: str) -> tuple[Table, int]:
    """Every key's latest value, and the offset to follow from afterwards."""
    consumer, tp = await _assigned(settings, topic)
    try:
        if topic not in await consumer.topics():
            # Asking a missing topic for offsets would auto-create it on some brokers.
            return {}, 0
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        table: Table = {}
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.key is not None:
                    table[record.key] = (record.value, record.offset)
        return table, end
    except AIOKafkaError as exc:
        raise KafkaUnavailableError(f"cannot read {topic}: {describe_failure(exc)}") from exc
    finally:
        await stop_through_cancel(consumer, within=STOP_SECONDS)


async def scan_table(
    settings: KafkaSettings, topic: str
) -> AsyncGenerator[tuple[bytes, bytes | None]]:
    """Every (key, value) of ``topic`` in offset order, until it is read to its end.

    For tables too large to hold as :func:`read_table` does: the caller keeps only
    what it needs (the latest value of a key is the last one yielded). The end is
    where the scan finds no more records after passing the end offset the broker
    reported at the start (some brokers count batches there, not records).
    """
    consumer, tp = await _assigned(settings, topic)
    try:
        if topic not in await consumer.topics():
            return
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while True:
            past_end = await consumer.position(tp) >= end
            batch = await consumer.getmany(
                tp, timeout_ms=200 if past_end else 1000, max_records=10_000
            )
            records = batch.get(tp, [])
            if not records and past_end:
                return
            for record in records:
                if record.key is not None:
                    yield record.key, record.value
    except AIOKafkaError as exc:
        raise KafkaUnavailableError(f"cannot read {topic}: {describe_failure(exc)}") from exc
    finally:
        await stop_through_cancel(consumer, within=STOP_SECONDS)


async def follow(
    settings: KafkaSettings, topic: str, start_offset: int, *, poll_ms: int = 500
) -> AsyncGenerator[ConsumerRecord[bytes, bytes]]:
    """Yield records appended to ``topic`` from ``start_offset`` on, until cancelled."""
    consumer, tp = await _assigned(settings, topic)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start_offset)
        while True:
            batch = await consumer.getmany(tp, timeout_ms=poll_ms)
            for record in batch.get(tp, []):
                yield record
            await asyncio.sleep(0)
    finally:
        await stop_through_cancel(consumer, within=STOP_SECONDS)
