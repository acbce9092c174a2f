"""Topics configured to lose data are refused at start, with the command that fixes them."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError

from pipeline.config.settings import KafkaSettings
from pipeline.errors import KafkaError, TopicConfigError
from pipeline.kafka.admin import (
    TopicSpec,
    check_topic_configs,
    describe_topic_configs,
    ensure_topics,
    sfamp_topics,
)
from pipeline.kafka.config_topic import latest_mapping, publish_mapping
from pipeline.kafka.topic_policy import (
    changes_topic_problems,
    compacted_topic_problems,
    required_retention_ms,
    retention_setting_problems,
)
from tests.backfill.conftest import mapping as account_mapping

BOOTSTRAP = "k:9092"
HOURLY = 3_600
DAY_MS = 86_400_000


def test_control_topics_must_be_compacted() -> None:
    assert compacted_topic_problems("sfamp.replay", {"cleanup.policy": "compact"}, BOOTSTRAP) == []
    assert compacted_topic_problems("sfamp.replay", {"cleanup.policy": "compact,delete"}, "") == []
    [problem] = compacted_topic_problems("sfamp.replay", {"cleanup.policy": "delete"}, BOOTSTRAP)
    assert problem.path == "sfamp.replay"
    assert problem.message.endswith(
        "kafka-configs.sh --bootstrap-server k:9092 --alter --entity-type topics "
        "--entity-name sfamp.replay --add-config cleanup.policy=compact"
    )


def test_configs_the_broker_does_not_report_are_not_judged() -> None:
    assert compacted_topic_problems("sfamp.config", {}, BOOTSTRAP) == []
    assert changes_topic_problems("sfamp.changes.Account", {}, BOOTSTRAP, HOURLY) == []
    odd = {"retention.ms": "soon"}
    assert changes_topic_problems("sfamp.changes.Account", odd, BOOTSTRAP, HOURLY) == []


def test_changes_topics_must_outlast_the_cadence_plus_a_day() -> None:
    topic = "sfamp.changes.Account"
    needed = required_retention_ms(HOURLY)
    assert needed == HOURLY * 1000 + DAY_MS
    enough = {"retention.ms": str(needed), "cleanup.policy": "delete"}
    assert changes_topic_problems(topic, enough, BOOTSTRAP, HOURLY) == []
    assert changes_topic_problems(topic, {"retention.ms": "-1"}, BOOTSTRAP, HOURLY) == []
    [short] = changes_topic_problems(topic, {"retention.ms": "3600000"}, BOOTSTRAP, HOURLY)
    assert "retention.ms=3600000 (1 h) is shorter than the cadence plus a day (25 h)" in (
        short.message
    )
    assert short.message.endswith(f"--entity-name {topic} --add-config retention.ms={needed}")
    [compacted] = changes_topic_problems(topic, {"cleanup.policy": "compact"}, BOOTSTRAP, HOURLY)
    assert "cleanup.policy=delete" in compacted.message


def test_the_retention_setting_must_outlast_the_cadence_plus_a_day() -> None:
    assert retention_setting_problems(168, 86_400) == []
    [problem] = retention_setting_problems(24, 86_400)
    assert problem.path == "SFAMP_KAFKA__CHANGES_RETENTION_HOURS"
    assert problem.message.endswith("set it to at least 48")


def test_topics_sfamp_creates_carry_the_retention_setting() -> None:
    settings = KafkaSettings(changes_retention_hours=48)
    specs = {spec.name: spec for spec in sfamp_topics(settings, ["Account"])}
    assert specs["sfamp.changes.Account"].config == {"retention.ms": str(48 * 3_600_000)}
    assert specs["sfamp.replay"].config == {"cleanup.policy": "compact"}
    assert specs["sfamp.sent"].config == {"cleanup.policy": "compact"}  # read back by reconciles


@pytest.mark.integration
async def test_existing_topics_that_would_lose_data_are_refused(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    replay, changes = f"{topic_prefix}.replay", f"{topic_prefix}.changes.Account"
    await ensure_topics(
        settings,
        [
            TopicSpec(replay, 1, {"cleanup.policy": "delete"}),
            TopicSpec(changes, 1, {"retention.ms": "3600000"}),
        ],
    )
    with pytest.raises(TopicConfigError) as info:
        await check_topic_configs(settings, ["Account"], cadence_seconds=HOURLY)
    assert {p.path for p in info.value.problems} == {replay, changes}
    assert all("kafka-configs.sh" in p.message for p in info.value.problems)


@pytest.mark.integration
async def test_topics_sfamp_creates_pass_its_own_check(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, sfamp_topics(settings, ["Account"]))
    await check_topic_configs(settings, ["Account"], cadence_seconds=86_400)
    configs = await describe_topic_configs(settings, [f"{topic_prefix}.changes.Account"])
    assert configs[f"{topic_prefix}.changes.Account"]["retention.ms"] == str(168 * 3_600_000)


@pytest.mark.integration
async def test_a_config_topic_made_elsewhere_with_several_partitions_still_holds_the_mapping(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The tables are read from partition 0; "mapping" hashes to partition 1 of 3."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    config = f"{topic_prefix}.config"
    await ensure_topics(settings, [TopicSpec(config, 3, {"cleanup.policy": "compact"})])
    mapping = account_mapping()
    published = await publish_mapping(settings, mapping, now_ms=1_700_000_000_000)
    found, _ = await latest_mapping(settings)
    assert found is not None, "the published mapping is not where it is read"
    assert found.revision == published.revision
    assert found.mapping == mapping


async def test_a_kafka_error_while_listing_topics_is_sfamps_own(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers catch sfamp's KafkaError (a backfill then writes its DLQ to a file)."""

    async def timed_out(self: AIOKafkaAdminClient) -> list[str]:
        raise KafkaTimeoutError

    monkeypatch.setattr(AIOKafkaAdminClient, "list_topics", timed_out)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    with pytest.raises(KafkaError, match="not answering"):
        await ensure_topics(settings, sfamp_topics(settings, []))
