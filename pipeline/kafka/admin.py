"""Create sfamp's topics if they are missing, with the right cleanup policies and retention,
and refuse existing ones configured so that they would lose data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, TopicConfigError
from pipeline.kafka.connection import client_options, start_through_cancel, unavailable
from pipeline.kafka.topic_policy import (
    changes_topic_problems,
    compacted_topic_problems,
    retention_setting_problems,
)
from pipeline.kafka.topics import TopicNames
from pipeline.wording import plural

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
        TopicSpec(names.sent, 1, compacted),
    ]
    retention = {"retention.ms": str(settings.changes_retention_hours * 3_600_000)}
    specs += [TopicSpec(names.changes(obj), settings.partitions, retention) for obj in objects]
    return specs


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the missing topics; returns the names created. Existing ones are left alone.

    Raises :class:`~pipeline.errors.KafkaError` when Kafka does not answer or refuses.
    """
    admin = await _started_admin(settings)
    try:
        try:
            existing = set(await admin.list_topics())
        except AIOKafkaError as exc:
            raise await unavailable(settings, exc) from exc
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            await _create(admin, spec, settings.replication_factor)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def check_topic_configs(
    settings: KafkaSettings, objects: Iterable[str], *, cadence_seconds: int
) -> None:
    """Refuse topics (and a retention setting) that would lose data under this cadence.

    Raises :class:`TopicConfigError` listing each problem with the command that
    fixes it. Configs the broker does not report are skipped (logged at debug).
    """
    names = TopicNames(settings.topic_prefix)
    problems = retention_setting_problems(settings.changes_retention_hours, cadence_seconds)
    configs = await describe_topic_configs(
        settings,
        [names.replay, names.config, names.sent, *(names.changes(obj) for obj in objects)],
    )
    for topic, found in configs.items():
        if names.object_of(topic) is None:
            problems += compacted_topic_problems(topic, found, settings.bootstrap_servers)
        else:
            problems += changes_topic_problems(
                topic, found, settings.bootstrap_servers, cadence_seconds
            )
    if problems:
        raise TopicConfigError(
            f"{plural(len(problems), 'topic setting')} would lose data; fix them and start again",
            problems,
        )


async def describe_topic_configs(
    settings: KafkaSettings, topics: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The configs the broker reports for each of ``topics`` that exists (maybe none)."""
    admin = await _started_admin(settings)
    try:
        existing = set(await admin.list_topics())
        wanted = [name for name in dict.fromkeys(topics) if name in existing]
        if not wanted:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
        responses = await admin.describe_configs(resources)
    except AIOKafkaError as exc:
        log.debug("topic_configs_unknown", reason=str(exc) or type(exc).__name__)
        return {}
    finally:
        await admin.close()
    return _configs_of(responses)


def _configs_of(responses: Iterable[Any]) -> dict[str, dict[str, str]]:
    """Topic -> {name: value} from DescribeConfigs answers; errored resources are left out."""
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _message, _type, name, entries, *_ in response.resources:
            if error_code:
                log.debug("topic_configs_unknown", topic=name, error_code=error_code)
                continue
            found[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return found


async def _started_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await start_through_cancel(admin)
    except BaseException as exc:  # refused, or cancelled while it connects: leave nothing open
        with contextlib.suppress(AIOKafkaError, OSError):
            await asyncio.shield(admin.close())
        if isinstance(exc, AIOKafkaError):
            raise await unavailable(settings, exc) from exc
        raise
    return admin


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
