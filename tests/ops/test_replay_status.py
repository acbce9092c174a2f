"""`sfamp replay status`: replay id age against Salesforce's 72-hour retention."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.records import ReplayMark
from pipeline.kafka.replay_age import age_level, replay_age
from pipeline.kafka.topics import TopicNames
from tests.ops.conftest import Cli, produce

HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


async def store_marks(kafka: KafkaSettings, *marks: ReplayMark) -> None:
    topic = TopicNames(kafka.topic_prefix).replay
    await produce(kafka, [(topic, *mark.encode()) for mark in marks])


def mark(channel: str, age_hours: float, replay_id: int = 10) -> ReplayMark:
    event = now_ms() - int(age_hours * HOUR_MS)
    return ReplayMark(channel, replay_id, stored_at_ms=event + 500, event_ts_ms=event)


@pytest.mark.parametrize(
    ("hours", "level"),
    [(0, "ok"), (23.9, "ok"), (24, "warn"), (59.9, "warn"), (60, "fail"), (80, "fail")],
)
def test_age_levels(hours: float, level: str) -> None:
    assert age_level(hours * 3600) == level


def test_age_falls_back_to_stored_at() -> None:
    now = 100 * HOUR_MS
    aged = replay_age(ReplayMark("/data/X", 1, stored_at_ms=now - 30 * HOUR_MS), now)
    assert (aged.level, aged.age_seconds) == ("warn", 30 * 3600)
    assert "stored_at" in aged.note


@pytest.mark.integration
async def test_ok_and_warn_exit_zero(topics: KafkaSettings, cli: Cli) -> None:
    await store_marks(
        topics,
        mark("/data/AccountChangeEvent", 30, replay_id=5),
        mark("/data/ContactChangeEvent", 1),
        mark("/data/AccountChangeEvent", 2, replay_id=6),  # the latest mark of a channel wins
        mark("/data/LeadChangeEvent", 26),
    )
    result = await cli("replay", "status", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["channel"]: row for row in json.loads(result.stdout)}
    assert {c: (r["status"], r["replay_id"]) for c, r in rows.items()} == {
        "/data/AccountChangeEvent": ("ok", 6),
        "/data/ContactChangeEvent": ("ok", 10),
        "/data/LeadChangeEvent": ("warn", 10),
    }
    assert 26 * 3600 <= rows["/data/LeadChangeEvent"]["age_seconds"] < 27 * 3600

    table = await cli("replay", "status")
    assert table.exit_code == 0
    assert "warn" in table.stdout
    assert "/data/LeadChangeEvent" in table.stdout
    assert "72 h" in table.stdout


@pytest.mark.integration
async def test_fail_from_sixty_hours_exits_one(topics: KafkaSettings, cli: Cli) -> None:
    await store_marks(
        topics, mark("/data/AccountChangeEvent", 61), mark("/data/ContactChangeEvent", 1)
    )
    result = await cli("replay", "status")
    assert result.exit_code == 1
    assert "fail" in result.stdout
    # What the failure means and what follows, not only the exit code.
    assert "when `sfamp run` subscribes again it re-syncs the channel's objects" in " ".join(
        result.stdout.split()
    )
    rows = json.loads((await cli("replay", "status", "--json")).stdout)
    assert [row["status"] for row in rows] == ["fail", "ok"]


@pytest.mark.integration
async def test_unreadable_mark_fails(topics: KafkaSettings, cli: Cli) -> None:
    topic = TopicNames(topics.topic_prefix).replay
    await produce(topics, [(topic, b"/data/AccountChangeEvent", b"garbage")])
    result = await cli("replay", "status", "--json")
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["status"] == "fail"
    assert "unreadable" in row["note"]


@pytest.mark.integration
async def test_nothing_stored_yet(topics: KafkaSettings, cli: Cli) -> None:
    result = await cli("replay", "status")
    assert result.exit_code == 0
    assert "no replay ids stored" in result.stdout


@pytest.mark.integration
async def test_fresh_cluster_is_empty_not_an_error(kafka: KafkaSettings, cli: Cli) -> None:
    """Before ingest ever ran there is no replay topic: nothing stored yet, exit 0."""
    result = await cli("replay", "status")
    assert result.exit_code == 0, result.output
    assert "no replay ids stored" in result.stdout
    assert result.stderr == ""
    as_json = await cli("replay", "status", "--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
