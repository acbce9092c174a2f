"""Where the service's first subscription of a backfilled object's channel starts.

A backfill reads every record once; ``sfamp run`` then follows the object's change
events. Subscribed for the first time at the latest event
(``SFAMP_SALESFORCE__REPLAY_START=latest``; the default, ``earliest``, needs none of
this) after the backfill ended, the service would never see the changes made in
between. So a backfill stores the replay id -2
(Salesforce's retained events, 72 hours) for the channels of its objects when
nothing at all is stored yet: the service's first subscription replays from there.
A replay is harmless: identifications are idempotent, and a record's last event
carries its current values. Once anything is stored, the service itself starts a
channel with nothing stored from -2 (:func:`pipeline.runtime.replay_start.unmarked_start`),
so the backfill writes nothing: never a key a running service may have moved on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

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
from pipeline.salesforce.channels import EARLIEST, channels_for

log = structlog.get_logger(__name__)

# How long the end of a backfill waits for the write (it ran beside the reads).
RECORD_SECONDS: Final = 2 * KAFKA_PROBE_SECONDS


async def record_stream_start(settings: Settings, objects: Sequence[str]) -> list[str]:
    """Store replay id -2 for the channels of ``objects`` when ``sfamp.replay`` holds
    nothing; the channels it stored one for.

    Raises :class:`KafkaError` when Kafka does not answer within
    :data:`KAFKA_PROBE_SECONDS` (a backfill runs without Kafka too).
    """
    timeout = min(settings.kafka.request_timeout_seconds, KAFKA_PROBE_SECONDS)
    kafka = settings.kafka.model_copy(update={"request_timeout_seconds": timeout})
    topic = TopicNames(kafka.topic_prefix).replay
    table, _ = await read_table(kafka, topic)
    if any(value for value, _offset in table.values()):
        return []
    channels = channels_for(objects, settings.salesforce.cdc_channel)
    fresh = [ReplayMark(channel, EARLIEST, now_ms()) for channel in channels]
    await ensure_topics(kafka, sfamp_topics(kafka, []))
    async with ChangeProducer(kafka) as producer:
        await producer.send_all([(topic, *mark.encode()) for mark in fresh])
    return [mark.channel for mark in fresh]


async def stream_start_recorded(
    task: asyncio.Task[list[str]], *, seconds: float = RECORD_SECONDS
) -> None:
    """Wait for :func:`record_stream_start` (at most ``seconds``: a run that was stopped
    too, as a cancel in the middle of a Kafka client's start can leave its connection
    open) and log what it did, or why it could not."""
    await asyncio.wait({task}, timeout=seconds)
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        reason = f"Kafka did not answer within {seconds:g} s"
    elif task.cancelled():
        return
    elif (error := task.exception()) is not None:
        if not isinstance(error, KafkaError):
            raise error
        reason = str(error)
    else:
        if channels := task.result():
            log.info("stream_start_recorded", channels=channels, replay_from=EARLIEST)
        return
    log.warning(
        "stream_start_not_recorded",
        reason=reason,
        hint="for the service's first start on this org, set "
        "SFAMP_SALESFORCE__REPLAY_START=earliest (the default): it then reads the changes "
        "made since this backfill from the retained events",
    )
