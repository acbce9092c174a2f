"""Read-only views of sfamp's topics for operators: offsets, lag, configs, recent messages.

Nothing here joins a consumer group. A join costs seconds (much more on some
brokers) and, with the deliver group's id, would rebalance the running
service. Messages are read with ``assign()`` + ``seek``; the deliver group's
committed offsets are fetched (OffsetFetch) by the admin client, which is
never a member of any group.

Lag in messages is ``end - committed`` per partition (``end - begin`` before
the first commit, since deliver starts from the earliest offset). Lag in time
is the age of the oldest unflushed change: the ``commit_ts`` of the message at
the committed offset (the Kafka timestamp when that message is no envelope).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, KafkaUnavailableError
from pipeline.kafka.connection import client_options, start_through_cancel, unavailable
from pipeline.kafka.topic_state import (
    Message,
    PartitionState,
    TopicKind,
    TopicState,
    change_time_ms,
    describe_retention,
    expected_topic,
    format_duration,
    iso_time,
    now_ms,
    resolve_topic,
    topic_kind,
)
from pipeline.kafka.topics import TopicNames

# The pure parts live in topic_state; importers of this module find them here too.
__all__ = [
    "QUICK_TIMEOUT_SECONDS",
    "KafkaInspector",
    "Message",
    "PartitionState",
    "TopicKind",
    "TopicState",
    "change_time_ms",
    "describe_retention",
    "expected_topic",
    "format_duration",
    "iso_time",
    "now_ms",
    "quick_settings",
    "resolve_topic",
    "topic_kind",
]

log = structlog.get_logger(__name__)

# Operator commands should answer or give up quickly, not wait out a 30 s request timeout.
QUICK_TIMEOUT_SECONDS: Final = 5.0
_POLL_MS: Final = 500
_FETCH_BATCH: Final = 2000
_FETCH_WAIT_MS: Final = 50


def quick_settings(
    settings: KafkaSettings, seconds: float = QUICK_TIMEOUT_SECONDS
) -> KafkaSettings:
    """The same connection with a request timeout of at most ``seconds``."""
    limit = min(settings.request_timeout_seconds, seconds)
    return settings.model_copy(update={"request_timeout_seconds": limit})


_STOP_SECONDS = 2.0


class KafkaInspector:
    """Read-only queries over the topics under ``settings.topic_prefix``.

    Use as ``async with KafkaInspector(settings) as inspector``. Every call gives
    up with :class:`KafkaUnavailableError` when the broker does not answer
    within ``timeout_seconds``.
    """

    def __init__(
        self, settings: KafkaSettings, *, timeout_seconds: float = QUICK_TIMEOUT_SECONDS
    ) -> None:
        self.settings = quick_settings(settings, timeout_seconds)
        self.names = TopicNames(settings.topic_prefix)
        self.timeout_seconds = timeout_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> KafkaInspector:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Seeks abandon in-flight fetches; a broker holding an empty fetch for the
            # default 500 ms would make every seek wait that long.
            fetch_max_wait_ms=_FETCH_WAIT_MS,
        )
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await start_through_cancel(consumer)
                await start_through_cancel(admin)
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            await _stop_quietly(consumer, admin)
            raise await unavailable(
                self.settings, exc, timeout_seconds=self.timeout_seconds, starting=True
            ) from exc
        except BaseException:  # cancelled while it connects (a signal): leave nothing open
            await asyncio.shield(_stop_quietly(consumer, admin))
            raise
        self._consumer, self._admin = consumer, admin
        return self

    async def stop(self) -> None:
        consumer, admin = self._consumer, self._admin
        self._consumer = self._admin = None
        if consumer is not None and admin is not None:
            await _stop_quietly(consumer, admin)

    async def __aenter__(self) -> KafkaInspector:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- topics and offsets -------------------------------------------------

    async def topics(self) -> list[str]:
        """Every topic under the prefix, sorted."""
        found: list[str] = await self._call(self._require_admin().list_topics())
        return sorted(t for t in found if self.names.is_ours(t))

    async def resolve(self, wanted: str) -> str | None:
        """The full name of an existing topic given in full or short form, else None."""
        existing = set(await self._call(self._require_admin().list_topics()))
        return resolve_topic(self.names, wanted, existing)

    async def partitions(self, topic: str) -> list[TopicPartition]:
        described = await self._call(self._require_admin().describe_topics([topic]))
        numbers = sorted(
            p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"]
        )
        if not numbers:
            raise KafkaError(f"topic {topic} does not exist")
        return [TopicPartition(topic, n) for n in numbers]

    async def state(self, topic: str) -> TopicState:
        """Offsets, the deliver group's position (changes topics) and the topic's config."""
        return (await self._states([topic]))[0]

    async def states(self) -> list[TopicState]:
        """The state of every topic under the prefix."""
        return await self._states(await self.topics())

    async def _states(self, topics: list[str]) -> list[TopicState]:
        """One request of each kind for all ``topics`` (ListOffsets, OffsetFetch,
        DescribeConfigs), not a round per topic: a ListOffsets for a topic the
        consumer has no metadata for waits out a metadata refresh each time."""
        by_topic = {topic: await self.partitions(topic) for topic in topics}
        every = [tp for tps in by_topic.values() for tp in tps]
        begins, ends = await self._bounds(every)
        committed = await self._committed(
            [tp for tp in every if topic_kind(self.names, tp.topic) == "changes"]
        )
        configs = await self.configs(topics)
        found: list[TopicState] = []
        for topic, tps in by_topic.items():
            kind = topic_kind(self.names, topic)
            parts = tuple(
                PartitionState(tp.partition, begins[tp], ends[tp], committed.get(tp)) for tp in tps
            )
            oldest = await self._oldest_unflushed(topic, parts) if kind == "changes" else None
            found.append(TopicState(topic, kind, parts, configs.get(topic), oldest))
        return found

    async def configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        """Topic configs by name; topics the broker would not describe are left out.

        Not every Kafka-compatible broker implements DescribeConfigs, and some
        answer only the settings given at creation; a missing answer is shown
        as unknown rather than failing the whole command.
        """
        if not topics:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        try:
            async with asyncio.timeout(self.timeout_seconds):
                responses = await self._require_admin().describe_configs(resources)
            return _parse_configs(responses)
        except (AIOKafkaError, OSError, TimeoutError, ValueError, TypeError, IndexError):
            return {}

    async def _bounds(
        self, tps: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        if not tps:
            return {}, {}
        consumer = self._require()
        begins = await self._call(consumer.beginning_offsets(tps))
        ends = await self._call(consumer.end_offsets(tps))
        return begins, await self._true_ends(begins, ends)

    async def _true_ends(
        self, begins: dict[TopicPartition, int], ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """The end offsets, checked against the last batch actually stored.

        Some Kafka-compatible brokers (tansu) answer ListOffsets with the base
        offset of the last record batch plus one, hiding the rest of that batch.
        Fetching from ``end - 1`` returns the whole batch, whose last offset is
        the truth; on Apache Kafka the answer is just the last record again.
        """
        true = dict(ends)
        waiting = {tp for tp in ends if ends[tp] > begins[tp]}
        if not waiting:
            return true
        consumer = self._require()
        consumer.assign(list(waiting))
        for tp in waiting:
            consumer.seek(tp, ends[tp] - 1)
        while waiting:
            batch = await self._call(consumer.getmany(*waiting, timeout_ms=_POLL_MS))
            if not batch:
                break
            for tp, records in batch.items():
                true[tp] = max([true[tp], *(int(record.offset) + 1 for record in records)])
            waiting -= batch.keys()
        return true

    async def _committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The deliver group's committed offsets, by one OffsetFetch of the admin client
        (which never joins the group)."""
        if not tps:
            return {}
        admin, group = self._require_admin(), self.settings.consumer_group
        found = await self._call(admin.list_consumer_group_offsets(group, None, tps))
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def _oldest_unflushed(self, topic: str, parts: tuple[PartitionState, ...]) -> int | None:
        """The earliest change time among the first unflushed message of each partition."""
        times: list[int] = []
        for part in parts:
            if part.lag:
                tp = TopicPartition(topic, part.partition)
                first = await self._read({tp: part.next_unflushed}, {tp: part.next_unflushed + 1})
                times += [change_time_ms(m) for m in first]
        return min(times, default=None)

    # -- messages -----------------------------------------------------------

    async def tail(
        self,
        topic: str,
        count: int,
        *,
        key: str | None = None,
        since_ms: int | None = None,
    ) -> tuple[list[Message], dict[int, int]]:
        """The latest ``count`` messages (of one key, after a time) and the end offsets
        (``count`` 0: none, the end offsets only).

        Without a key only the last ``count`` offsets of each partition are
        read; a key filter reads every partition from ``since_ms`` (or the
        beginning), because a record's history is spread over the whole topic.
        """
        tps = await self.partitions(topic)
        begins, ends = await self._bounds(tps)
        if count <= 0:  # the end offsets alone: where following only new messages starts
            return [], {tp.partition: ends[tp] for tp in tps}
        if since_ms is not None:
            starts = await self._offsets_at(tps, since_ms, ends)
        elif key is None:
            starts = {tp: max(begins[tp], ends[tp] - count) for tp in tps}
        else:
            starts = dict(begins)
        wanted = None if key is None else key.encode()

        def match(message: Message) -> bool:
            # The time is checked here too: some brokers answer offsets_for_times loosely.
            in_time = since_ms is None or message.timestamp_ms >= since_ms
            return in_time and (wanted is None or message.key == wanted)

        latest: list[Message] = []
        for tp in tps:  # one partition at a time bounds memory to `count` messages each
            latest += await self._read(
                {tp: starts[tp]}, {tp: ends[tp]}, keep_last=count, match=match
            )
        return sorted(latest, key=_order)[-count:], {tp.partition: ends[tp] for tp in tps}

    async def read_all(self, topic: str) -> list[Message]:
        """Every retained message of ``topic``, in time order."""
        tps = await self.partitions(topic)
        begins, ends = await self._bounds(tps)
        return sorted(await self._read(dict(begins), dict(ends)), key=_order)

    async def read_state(self, state: TopicState) -> list[Message]:
        """Every message of a topic between the offsets ``state`` holds, in time order."""
        parts = {TopicPartition(state.name, p.partition): p for p in state.partitions}
        starts = {tp: part.begin for tp, part in parts.items()}
        ends = {tp: part.end for tp, part in parts.items()}
        return sorted(await self._read(starts, ends), key=_order)

    async def follow(
        self, topic: str, start: Mapping[int, int], *, poll_ms: int = _POLL_MS
    ) -> AsyncGenerator[Message, None]:
        """Messages appended after ``start`` (partition -> offset), until the caller stops."""
        consumer = self._require()
        tps = await self.partitions(topic)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp.partition, 0))
        while True:
            batch = await self._call(consumer.getmany(*tps, timeout_ms=poll_ms))
            for records in batch.values():
                for record in records:
                    yield _message(record)

    async def _offsets_at(
        self, tps: list[TopicPartition], since_ms: int, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        found = await self._call(self._require().offsets_for_times(dict.fromkeys(tps, since_ms)))
        return {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}

    async def _read(
        self,
        starts: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
        *,
        keep_last: int | None = None,
        match: Callable[[Message], bool] | None = None,
    ) -> list[Message]:
        """Read ``[start, end)`` of each partition; gives up when the broker stops answering."""
        pending = {tp for tp in starts if starts[tp] < ends[tp]}
        if not pending:
            # Nothing to read, so no new assignment: aiokafka's fetcher loses a stop()
            # that comes while it switches assignments, and stop() then hangs.
            return []
        consumer = self._require()
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, starts[tp])
        kept: deque[Message] = deque(maxlen=keep_last)
        idle_since = time.monotonic()
        while pending:
            batch = await self._call(
                consumer.getmany(*pending, timeout_ms=_POLL_MS, max_records=_FETCH_BATCH)
            )
            for tp, records in batch.items():
                messages = (_message(r) for r in records if r.offset < ends[tp])
                kept.extend(m for m in messages if match is None or match(m))
            for tp in list(pending):
                if await self._call(consumer.position(tp)) >= ends[tp]:
                    pending.discard(tp)
            if batch:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.timeout_seconds:
                topics = ", ".join(sorted({tp.topic for tp in pending}))
                raise KafkaUnavailableError(f"Kafka stopped returning messages of {topics}")
        return list(kept)

    # -- helpers --------------------------------------------------------------

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise KafkaError("inspector used before start()")
        return self._consumer

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise KafkaError("inspector used before start()")
        return self._admin

    async def _call(self, awaitable: Any) -> Any:
        """Await one broker call within the timeout, translating aiokafka's errors."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await awaitable
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            raise await unavailable(
                self.settings, exc, timeout_seconds=self.timeout_seconds
            ) from exc


def _message(record: ConsumerRecord[Any, Any]) -> Message:
    return Message(
        record.topic, record.partition, record.offset, record.timestamp, record.key, record.value
    )


def _order(message: Message) -> tuple[int, int, int]:
    return (message.timestamp_ms, message.partition, message.offset)


def _parse_configs(responses: list[Any]) -> dict[str, dict[str, str]]:
    """DescribeConfigs answers -> {topic: {name: value}}; resources with an error are left out."""
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            error_code, name, entries = resource[0], resource[3], resource[4]
            if error_code == 0:
                configs[name] = {e[0]: e[1] for e in entries if e[1] is not None}
    return configs


async def _stop_quietly(consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
    # aiokafka's fetcher can lose the cancel of a stop() that comes while it switches
    # assignments, and stop() then waits forever; a read-only command need not wait.
    for client, close in (("consumer", consumer.stop), ("admin", admin.close)):
        budget = asyncio.timeout(_STOP_SECONDS)
        try:
            async with budget:
                await close()
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            log.debug("kafka_inspector_stop_failed", client=client, error=repr(exc))
        # Checked apart: a lost cancel ends the wait without raising TimeoutError.
        if budget.expired():
            log.warning("kafka_inspector_stop_timeout", client=client, seconds=_STOP_SECONDS)
