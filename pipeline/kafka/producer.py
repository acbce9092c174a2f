"""The one way sfamp writes to Kafka: acks=all, idempotent where the broker allows.

Every send is awaited until the broker acknowledges it, because checkpoints
(replay ids, DLQ hand-offs) move forward only after Kafka holds the data.
Without idempotence a retried send may duplicate a record; that is harmless
here because deliver coalesces by commit order and Amplitude's ``$set`` /
``$unset`` are idempotent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import UnknownError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, KafkaUnavailableError
from pipeline.kafka.connection import (
    client_options,
    describe_failure,
    start_through_cancel,
    unavailable,
)
from pipeline.kafka.topics import TopicNames

log = structlog.get_logger(__name__)

Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


class ChangeProducer:
    """Durable producer; use ``async with ChangeProducer(settings) as producer``."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 5) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self.idempotent = False
        # The compacted tables are read from partition 0 (pipeline.kafka.compacted), so
        # they are written there, whatever partition count a topic made elsewhere has.
        names = TopicNames(settings.topic_prefix)
        self._tables = frozenset((names.replay, names.config, names.sent))

    def _build(self, idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=self._linger_ms,
            max_batch_size=1024 * 1024,
        )

    async def start(self) -> ChangeProducer:
        mode = self._settings.idempotent_producer
        if mode != "false":
            try:
                self._producer = await self._started(self._build(idempotent=True))
                self.idempotent = True
                return self
            except UnknownError as exc:
                if mode == "true":
                    raise KafkaError("the broker refused an idempotent producer") from exc
                # Expected with brokers such as tansu (mode "auto"): worth a line, not a warning.
                log.info("kafka_idempotence_unsupported", fallback="acks=all")
        self._producer = await self._started(self._build(idempotent=False))
        return self

    async def _started(self, producer: AIOKafkaProducer) -> AIOKafkaProducer:
        try:
            # start() obtains the producer id, so a broker without idempotence fails here.
            await start_through_cancel(producer)
        except BaseException:
            with contextlib.suppress(AIOKafkaError, OSError):
                await producer.stop()
            raise
        return producer

    async def send_all(self, records: Sequence[Record]) -> None:
        """Send a batch and return only when the broker acknowledged every record."""
        producer = self._require()
        try:
            tables = self._tables
            futures = [
                await producer.send(t, value=v, key=k, partition=0 if t in tables else None)
                for t, k, v in records
            ]
            for future in futures:
                await future
        except AIOKafkaError as exc:
            reason = describe_failure(exc)
            raise KafkaUnavailableError(f"Kafka did not acknowledge a write: {reason}") from exc

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await self.send_all([(topic, key, value)])

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise KafkaError("producer used before start()")
        return self._producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> ChangeProducer:
        try:
            return await self.start()
        except AIOKafkaError as exc:
            raise await unavailable(self._settings, exc) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
