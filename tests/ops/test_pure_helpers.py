"""The pure parts of the operator commands: time parsing, retention, names, DLQ folding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer

from pipeline.cli.dlq_cmd import (
    DlqItem,
    fold_dlq,
    replay_marker,
    rounds,
    update_from_identification,
)
from pipeline.cli.topics_cmd import parse_since
from pipeline.errors import EnvelopeError
from pipeline.kafka.inspect import (
    Message,
    PartitionState,
    describe_retention,
    format_duration,
    resolve_topic,
    topic_kind,
)
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topics import TopicNames

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
NAMES = TopicNames("sfamp")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", datetime(2026, 1, 2, 11, 45, tzinfo=UTC)),
        ("2h", datetime(2026, 1, 2, 10, 0, tzinfo=UTC)),
        ("1d", datetime(2026, 1, 1, 12, 0, tzinfo=UTC)),
        ("2026-01-02T08:30:00", datetime(2026, 1, 2, 8, 30, tzinfo=UTC)),
        ("2026-01-02T08:30:00+02:00", datetime(2026, 1, 2, 6, 30, tzinfo=UTC)),
        ("2026-01-02T08:30:00Z", datetime(2026, 1, 2, 8, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == int(expected.timestamp() * 1000)


def test_parse_since_refuses_nonsense() -> None:
    with pytest.raises(typer.BadParameter, match="relative time"):
        parse_since("last tuesday", NOW)


@pytest.mark.parametrize(
    ("config", "shown"),
    [
        (None, "unknown"),
        ({}, "broker default"),
        ({"cleanup.policy": "compact"}, "compact"),
        ({"retention.ms": "604800000"}, "7d"),
        ({"retention.ms": "-1"}, "forever"),
        ({"retention.ms": "5400000"}, "1h 30m"),
    ],
)
def test_describe_retention(config: dict[str, str] | None, shown: str) -> None:
    assert describe_retention(config) == shown


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 90, 3600, 93600)] == ["5s", "1m", "1h", "1d 2h"]


def test_resolve_topic_accepts_short_forms() -> None:
    existing = {"sfamp.changes.Account", "sfamp.dlq"}
    assert resolve_topic(NAMES, "Account", existing) == "sfamp.changes.Account"
    assert resolve_topic(NAMES, "changes.Account", existing) == "sfamp.changes.Account"
    assert resolve_topic(NAMES, "sfamp.dlq", existing) == "sfamp.dlq"
    assert resolve_topic(NAMES, "dlq", existing) == "sfamp.dlq"
    assert resolve_topic(NAMES, "Contact", existing) is None
    assert topic_kind(NAMES, "sfamp.changes.Account") == "changes"
    assert topic_kind(NAMES, "sfamp.replay") == "replay"
    assert topic_kind(NAMES, "sfamp.other") == "other"


def test_lag_counts_from_begin_before_the_first_commit() -> None:
    assert PartitionState(0, begin=3, end=10).lag == 7
    assert PartitionState(0, begin=3, end=10, committed=8).lag == 2
    assert PartitionState(0, begin=5, end=10, committed=2).lag == 5  # committed fell out


def _message(offset: int, entry: DlqEntry) -> Message:
    key, value = entry.encode()
    return Message("sfamp.dlq", 0, offset, 1000 + offset, key, value)


def test_marker_counts_only_for_earlier_writes_of_its_entry() -> None:
    entry = DlqEntry("t:0:5", "malformed", "bad", 1, "001", "{", source_topic="t")
    marker = replay_marker(entry, "reproduce", "t", at_ms=2)
    replayed = fold_dlq([_message(0, entry), _message(1, marker)])
    assert [(i.id, i.replayed_how) for i in replayed] == [("t:0:5", "reproduce")]
    # The same input dead-lettered again after the replay is pending again.
    again = fold_dlq([_message(0, entry), _message(1, marker), _message(2, entry)])
    assert [(i.id, i.replayed_at_ms) for i in again] == [("t:0:5", None)]


def test_update_from_identification() -> None:
    update = update_from_identification(
        {
            "group_type": "account",
            "group_value": "001",
            "group_properties": {"$set": {"name": "Acme"}, "$unset": {"fax": "-"}},
        }
    )
    assert (update.set, update.unset) == ({"name": "Acme"}, frozenset({"fax"}))
    with pytest.raises(EnvelopeError):
        update_from_identification({"group_value": "001"})


def test_rounds_never_hold_a_group_twice() -> None:
    a1, a2, b = (
        update_from_identification(
            {"group_type": "account", "group_value": v, "group_properties": {}}
        )
        for v in ("a", "a", "b")
    )
    entry = DlqEntry("x", "rejected", "", 0, "k", None)
    item = DlqItem("x", _message(0, entry), entry)
    split = rounds([(item, a1), (item, a2), (item, b)])
    assert [[u.group_value for _, u in r] for r in split] == [["a", "b"], ["a"]]
