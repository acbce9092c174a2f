"""The changes consumer: deliver's member of the Kafka consumer group.

It owns the ``AIOKafkaConsumer`` of the deliver pump: building it from the
settings, joining the group by pattern, fetching, committing, rewinding and
stopping. aiokafka's exceptions become sfamp's (:mod:`pipeline.errors`) here,
so the runtime decides by class alone. Offsets are never committed
automatically: the pump commits after Amplitude has accepted a flush.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.errors import KafkaError as AIOKafkaError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, KafkaUnavailableError
from pipeline.kafka.connection import client_options

log = structlog.get_logger(__name__)

# aiokafka's own types, named for the runtime so that it never imports aiokafka.
Partition: TypeAlias = TopicPartition
Record: TypeAlias = ConsumerRecord[Any, Any]


class RebalanceHandler(Protocol):
    """What the pump does when the group moves partitions (called inside the rebalance)."""

    async def partitions_revoked(self, revoked: set[Partition]) -> None: ...

    async def partitions_assigned(self, assigned: set[Partition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, handler: RebalanceHandler) -> None:
        self._handler = handler

    async def on_partitions_revoked(self, revoked: set[Partition]) -> None:
        await self._handler.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Partition]) -> None:
        await self._handler.partitions_assigned(assigned)


class ChangesConsumer:
    """One group member subscribed to every changes topic; ``start`` before use, then ``stop``."""

    def __init__(self, settings: KafkaSettings, *, max_poll_interval_seconds: float) -> None:
        self._settings = settings
        self._consumer = self._build(max_poll_interval_seconds)

    def _build(self, max_poll_interval_seconds: float) -> AIOKafkaConsumer:
        kafka = self._settings
        session_ms = int(kafka.consumer_session_timeout_seconds * 1000)
        return AIOKafkaConsumer(
            **client_options(kafka),
            group_id=kafka.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 6),
            metadata_max_age_ms=int(kafka.metadata_max_age_seconds * 1000),
            max_poll_interval_ms=int(max_poll_interval_seconds * 1000),
        )

    async def start(self, pattern: str, handler: RebalanceHandler) -> None:
        """Connect, then join the group for every topic matching ``pattern``."""
        try:
            await self._consumer.start()
        except AIOKafkaError as exc:
            raise KafkaUnavailableError(f"deliver cannot reach Kafka: {exc}") from exc
        self._consumer.subscribe(pattern=pattern, listener=_Listener(handler))

    async def stop(self) -> None:
        await self._consumer.stop()

    async def fetch(
        self, *, timeout_seconds: float, max_records: int
    ) -> Mapping[Partition, list[Record]]:
        """Whatever arrives within the timeout, by partition (often nothing)."""
        try:
            batch: dict[Partition, list[Record]] = await self._consumer.getmany(
                timeout_ms=int(timeout_seconds * 1000), max_records=max_records
            )
        except AIOKafkaError as exc:
            raise _translated(exc, "reading the changes topics") from exc
        return batch

    def assignment(self) -> set[Partition]:
        return set(self._consumer.assignment())

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit the offsets of partitions still assigned; False when the group has moved on."""
        assigned = self._consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("deliver_commit_refused", reason=str(exc))
            return False
        except AIOKafkaError as exc:
            raise _translated(exc, "committing offsets") from exc
        return True

    async def rewind(self, partitions: set[Partition]) -> None:
        """Read each partition again from its committed offset (or its beginning)."""
        consumer = self._consumer
        try:
            for tp in partitions:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
        except AIOKafkaError as exc:
            raise _translated(exc, "rewinding to the committed offsets") from exc

    def highwater(self, tp: Partition) -> int | None:
        value = self._consumer.highwater(tp)
        return None if value is None else int(value)


def _translated(exc: AIOKafkaError, doing: str) -> KafkaError:
    if exc.retriable:
        return KafkaUnavailableError(f"Kafka failed while {doing}: {exc}")
    return KafkaError(f"Kafka failed while {doing}: {exc}")
