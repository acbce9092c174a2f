"""The Kafka part of ``sfamp status`` and of the console's Status page: one connection,
one offsets round for every topic, and nothing of it left running afterwards."""

from __future__ import annotations

import json
import time

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from pipeline.config.settings import KafkaSettings, Settings
from pipeline.config.validation import parse_mapping
from pipeline.kafka.config_topic import publish_mapping
from pipeline.kafka.records import DlqEntry, ReplayMark
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.status_report import kafka_status
from pipeline.transform.envelope import encode
from tests.ops.conftest import change, commit, produce
from tests.runtime.conftest import MAPPING

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


async def test_reports_mapping_lag_replay_and_dlq(topics: KafkaSettings) -> None:
    names = TopicNames(topics.topic_prefix)
    now = int(time.time() * 1000)
    mapping = parse_mapping(json.dumps(MAPPING))
    await publish_mapping(topics, mapping, now_ms=now)
    await publish_mapping(topics, mapping, now_ms=now)
    changes = names.changes("Account")
    stamps = [now - 2 * HOUR_MS, now - HOUR_MS, now - 60_000]
    await produce(topics, [(changes, b"001A", encode(change("001A", ts))) for ts in stamps])
    # One key, one partition: the deliver group has flushed the first change of it.
    await commit(topics, {TopicPartition(changes, p): 1 for p in range(topics.partitions)})
    mark = ReplayMark("/data/AccountChangeEvent", 7, stored_at_ms=now, event_ts_ms=now - 1000)
    entry = DlqEntry("e1", "rejected", "refused", now, "account:001A", {"x": 1})
    await produce(topics, [(names.replay, *mark.encode()), (names.dlq, *entry.encode())])

    report = await kafka_status(Settings(kafka=topics))

    assert report["mapping"]["revision"] == 2
    assert report["mapping"]["relations"][0] == "Account -> account (name: Id, 5 properties)"
    assert report["lag_messages"] == 2
    assert HOUR_MS / 1000 <= report["lag_seconds"] < 2 * HOUR_MS / 1000
    assert [(r["channel"], r["replay_id"]) for r in report["replay"]] == [
        ("/data/AccountChangeEvent", 7)
    ]
    assert report["dlq_pending"] == 1


async def test_stops_its_clients_at_once(topics: KafkaSettings) -> None:
    """Reading an empty topic right after a full one used to leave aiokafka's fetcher
    switching assignments as the inspector stopped: the stop was lost and every
    report waited out the stop budget."""
    names = TopicNames(topics.topic_prefix)
    now = int(time.time() * 1000)
    mark = ReplayMark("/data/AccountChangeEvent", 7, stored_at_ms=now, event_ts_ms=now)
    await produce(topics, [(names.replay, *mark.encode())])

    with capture_logs() as logs:
        report = await kafka_status(Settings(kafka=topics))

    assert (report["mapping"], report["dlq_pending"]) == (None, 0)
    assert len(report["replay"]) == 1
    assert [e for e in logs if e["event"] == "kafka_inspector_stop_timeout"] == []
