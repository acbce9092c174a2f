"""Where the service's first subscription of a backfilled object's channel starts.

A backfill reads every record once; ``sfamp run`` then follows the object's change
events. Subscribed for the first time at the latest event
(``SFAMP_SALESFORCE__REPLAY_START=latest``) after the backfill ended, the service
would never see the changes made in between. So a backfill stores the replay id -2
(Salesforce's retained events, 72 hours) for each channel that has nothing stored
yet: the service's first subscription replays from there. A replay is harmless:
identifications are idempotent, and a record's last event carries its current
values. A channel that has a replay id stored keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from pipeline.config.settings import Settings
from pipeline.errors import KafkaError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.compacted import read_table
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import ReplayMark
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.backfill.checkpoint import KAFKA_PROBE_SECONDS
from pipeline.runtime.cadence import now_ms
from pipeline.salesforce.cdc import EARLIEST, channel_for

log = structlog.get_logger(__name__)


def channels_of(settings: Settings, objects: Sequence[str]) -> list[str]:
    """The CDC channels the service follows ``objects`` on (one custom channel, if set)."""
    custom = settings.salesforce.cdc_channel
    return [custom] if custom else list(dict.fromkeys(map(channel_for, objects)))


async def record_stream_start(settings: Settings, objects: Sequence[str]) -> list[str]:
    """Store replay id -2 for each channel of ``objects`` with nothing stored; the channels
    it stored one for.

    Raises :class:`KafkaError` when Kafka does not answer within
    :data:`KAFKA_PROBE_SECONDS` (a backfill runs without Kafka too).
    """
    timeout = min(settings.kafka.request_timeout_seconds, KAFKA_PROBE_SECONDS)
    kafka = settings.kafka.model_copy(update={"request_timeout_seconds": timeout})
    topic = TopicNames(kafka.topic_prefix).replay
    table, _ = await read_table(kafka, topic)
    stored = {key.decode(errors="replace") for key, (value, _) in table.items() if value}
    fresh = [
        ReplayMark(channel, EARLIEST, now_ms())
        for channel in channels_of(settings, objects)
        if channel not in stored
    ]
    if fresh:
        await ensure_topics(kafka, sfamp_topics(kafka, []))
        async with ChangeProducer(kafka) as producer:
            await producer.send_all([(topic, *mark.encode()) for mark in fresh])
    return [mark.channel for mark in fresh]


async def stream_start_recorded(task: asyncio.Task[list[str]]) -> None:
    """Wait for :func:`record_stream_start` and log what it did, or why it could not."""
    try:
        channels = await task
    except KafkaError as exc:
        log.warning(
            "stream_start_not_recorded",
            reason=str(exc),
            hint="start 'sfamp run' before this backfill ends, or set "
            "SFAMP_SALESFORCE__REPLAY_START=earliest for its first start",
        )
        return
    if channels:
        log.info("stream_start_recorded", channels=channels, replay_from=EARLIEST)
