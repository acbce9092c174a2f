"""Recording what Amplitude accepted for reconciled properties, on every sending path.

Deliver's flushes, ``sfamp backfill`` and ``sfamp dlq replay`` call
:meth:`SentRecorder.record` with the updates they sent and Amplitude's report,
after Amplitude answered: a digest is written only for what it accepted, in one
batched produce per send. Only the reconciled properties of the groups sent are
recorded (:func:`~pipeline.runtime.reconcile.digest.reconciled_properties`), so
a mapping without formula fields (or fields change events never carry) writes
nothing.

In the service the write shares the flush's fate: if Kafka does not take it, the
flush fails and is sent again. A backfill or a replay may run without Kafka
(:class:`LazyKafkaWrite`): it then says once that it could not record, since the
next reconcile would trust older digests for the groups it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Protocol

import structlog

from pipeline.amplitude import DeliveryReport
from pipeline.config.mapping import MappingConfig
from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer, Record
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.reconcile.digest import reconciled_properties, sent_records
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import ObjectSchema

KAFKA_PROBE_SECONDS: Final = 5.0
Write = Callable[[Sequence[Record]], Awaitable[None]]
log = structlog.get_logger(__name__)


class SchemaSource(Protocol):
    """Describes on demand (``SchemaCache`` is one)."""

    async def ensure(self, objects: Iterable[str]) -> object: ...

    def cached(self, sfdc_object: str) -> ObjectSchema | None: ...


class SentRecorder:
    """Writes the digests of accepted reconciled properties to ``topic``.

    Which properties are reconciled depends on the describe: ``schemas`` describes
    on demand; without it, only the objects :meth:`learn` was given are known (a
    backfill has described them already, and must not spend API calls again).
    """

    def __init__(self, write: Write, topic: str, schemas: SchemaSource | None) -> None:
        self._write = write
        self._topic = topic
        self._schemas = schemas
        self._known: dict[str, ObjectSchema] = {}
        self.written = 0

    def learn(self, schema: ObjectSchema) -> None:
        self._known[schema.name] = schema

    def _schema_of(self, sfdc_object: str) -> ObjectSchema | None:
        known = self._known.get(sfdc_object)
        if known is None and self._schemas is not None:
            return self._schemas.cached(sfdc_object)
        return known

    async def record(
        self, config: MappingConfig, updates: Sequence[GroupUpdate], report: DeliveryReport
    ) -> int:
        """Record what ``report`` says Amplitude accepted of ``updates``; the records written."""
        group_types = {update.group_type for update in updates}
        objects = [m.sfdc_object for m in config.mappings if m.group_type in group_types]
        if not objects:
            return 0
        if self._schemas is not None:
            await self._schemas.ensure(o for o in dict.fromkeys(objects) if o not in self._known)
        reconciled = reconciled_properties(config, self._schema_of)
        if not reconciled:
            return 0
        rejected = (rejection.update.key for rejection in report.rejected)
        records = sent_records(updates, rejected, reconciled)
        if records:
            await self._write([(self._topic, key, value) for key, value in records])
            self.written += len(records)
        return len(records)


def command_recorder(
    settings: KafkaSettings, schemas: SchemaSource | None, stack: contextlib.AsyncExitStack
) -> SentRecorder:
    """The recorder of a command that may run without Kafka (closed with ``stack``)."""
    writer = LazyKafkaWrite(settings)
    stack.push_async_callback(writer.aclose)
    return SentRecorder(writer, TopicNames(settings.topic_prefix).sent, schemas)


class LazyKafkaWrite:
    """A producer opened on the first write, for commands that may run without Kafka.

    sfamp's control topics are created first when missing (``sfamp.sent`` must be
    compacted, with one partition, not what a broker creates on its own). When Kafka
    does not answer (within :data:`KAFKA_PROBE_SECONDS`), or later fails, the writes
    stop with one warning: the command's own work goes on.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        timeout = min(settings.request_timeout_seconds, KAFKA_PROBE_SECONDS)
        self._settings = settings.model_copy(update={"request_timeout_seconds": timeout})
        self._stack = contextlib.AsyncExitStack()
        self._producer: ChangeProducer | None = None
        self._lock = asyncio.Lock()
        self.failed: str | None = None

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.failed is not None or not records:
            return
        try:
            async with self._lock:
                if self._producer is None:
                    await ensure_topics(self._settings, sfamp_topics(self._settings, []))
                    producer = ChangeProducer(self._settings)
                    self._producer = await self._stack.enter_async_context(producer)
            await self._producer.send_all(records)
        except KafkaError as exc:
            self.failed = str(exc)
            log.warning(
                "sent_digest_not_recorded",
                reason=self.failed,
                consequence="the digests of the groups this run sends stay as they were: a "
                "reconcile may then miss a value that returns to the one recorded before",
            )

    async def aclose(self) -> None:
        await self._stack.aclose()
