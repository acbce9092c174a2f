"""Create sfamp's topics if they are missing, with the right cleanup policies."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, KafkaUnavailableError
from pipeline.kafka.connection import client_options
from pipeline.kafka.topics import TopicNames

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def sfamp_topics(settings: KafkaSettings, objects: Iterable[str]) -> list[TopicSpec]:
    """The topics a deployment with these mapped objects needs."""
    names = TopicNames(settings.topic_prefix)
    compacted = {"cleanup.policy": "compact"}
    specs = [
        TopicSpec(names.replay, 1, compacted),
        TopicSpec(names.config, 1, compacted),
        TopicSpec(names.dlq, 1),
    ]
    specs += [TopicSpec(names.changes(obj), settings.partitions) for obj in objects]
    return specs


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the missing topics; returns the names created. Existing ones are left alone."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
    except AIOKafkaError as exc:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            await _create(admin, spec, settings.replication_factor)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, spec: TopicSpec, replication: int) -> None:
    topic = NewTopic(spec.name, spec.partitions, replication, topic_configs=spec.config)
    try:
        result = await admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return  # created concurrently by another instance: fine
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot create topic {spec.name}: {exc}") from exc
    for name, code, message in getattr(result, "topic_errors", []):
        if code not in (0, TopicAlreadyExistsError.errno):
            raise KafkaError(f"cannot create topic {name}: error {code} {message or ''}".strip())
    log.info("topic_created", topic=spec.name, partitions=spec.partitions)
