"""The pure parts of the operator commands: time parsing, retention, names, DLQ folding."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from pipeline.cli.topics_cmd import format_time
from pipeline.config.validation import parse_mapping
from pipeline.errors import ConfigError
from pipeline.kafka.dlq import dismissal_marker, fold_dlq, redelivery_marker, select
from pipeline.kafka.inspect import (
    Message,
    PartitionState,
    describe_retention,
    expected_topic,
    format_duration,
    resolve_topic,
    topic_kind,
)
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topic_rows import parse_since
from pipeline.kafka.topic_state import iso_time
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.deliver.window import FlushWindow
from pipeline.runtime.dlq_dismiss import dismissals, unreplayable
from pipeline.runtime.dlq_targets import Target, changes_of, group_literal, targets_of
from pipeline.transform.envelope import encode
from tests.ops.conftest import MAPPING, change

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
    with pytest.raises(ValueError, match="relative time"):
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
    marker = redelivery_marker(entry, "reread", "sent 1 group", at_ms=2)
    replayed = fold_dlq([_message(0, entry), _message(1, marker)])
    assert [(i.id, i.replayed_how, i.pending) for i in replayed] == [("t:0:5", "reread", False)]
    # The same input dead-lettered again after the replay is pending again.
    again = fold_dlq([_message(0, entry), _message(1, marker), _message(2, entry)])
    assert [(i.id, i.replayed_at_ms, i.pending) for i in again] == [("t:0:5", None, True)]


def test_an_identification_refused_again_is_one_entry() -> None:
    """Read again after a flush that could not commit, the same refusal folds into one."""
    identification = {"group_type": "account", "group_value": "a", "group_properties": {"$set": {}}}
    first, second = FlushWindow(), FlushWindow()
    first.reject(dict(identification), 400, "invalid group")
    second.reject(dict(identification), 400, "invalid group")
    other = FlushWindow()
    other.reject(identification | {"group_properties": {"$set": {"tier": "Gold"}}}, 400, "x")
    entries = [first.dlq[0], second.dlq[0], other.dlq[0]]
    assert entries[0].id == entries[1].id != entries[2].id
    assert entries[0].id.startswith("rejected:account:a:")
    items = fold_dlq([_message(n, entry) for n, entry in enumerate(entries)])
    assert [item.id for item in items] == [entries[0].id, entries[2].id]


def test_select_by_id_or_every_pending_entry() -> None:
    one = DlqEntry("a", "rejected", "", 0, "account:a", None)
    two = DlqEntry("b", "rejected", "", 0, "account:b", None)
    items = fold_dlq(
        [_message(0, one), _message(1, two), _message(2, redelivery_marker(two, "reread", "", 3))]
    )
    assert [i.id for i in select(items, [], everything=True)] == ["a"]
    assert [i.id for i in select(items, ["b", "b"], everything=False)] == ["b"]
    with pytest.raises(ConfigError, match="no DLQ entry with id c"):
        select(items, ["c"], everything=False)
    with pytest.raises(ConfigError, match="not both"):
        select(items, ["a"], everything=True)
    with pytest.raises(ConfigError, match="say which entries"):
        select(items, [], everything=False)


def test_expected_topics_are_the_control_topics_only() -> None:
    assert expected_topic(NAMES, "dlq") == "sfamp.dlq"
    assert expected_topic(NAMES, "sfamp.replay") == "sfamp.replay"
    assert expected_topic(NAMES, "changes.Account") is None  # unmapped or misspelled
    assert expected_topic(NAMES, "nope") is None


# -- which records a DLQ entry stands for ------------------------------------------

CONFIG = parse_mapping(orjson.dumps(MAPPING))
ACCOUNT_ID = "001000000000001AAA"


def _rejected(key: str) -> DlqEntry:
    return DlqEntry("r", "rejected", "400", 0, key, {"group_properties": {}})


def test_rejected_group_named_by_id_is_read_by_id() -> None:
    (target,) = targets_of(_rejected(f"account:{ACCOUNT_ID}"), CONFIG)  # type: ignore[misc]
    assert (target.sfdc_object, target.record_ids, target.by_group) == (
        "Account",
        (ACCOUNT_ID,),
        False,
    )


def test_rejected_group_named_by_another_field_is_looked_up_by_it() -> None:
    (target,) = targets_of(_rejected("account_ext:EXT-1"), CONFIG)  # type: ignore[misc]
    assert (target.by_group, target.group_value, target.record_ids) == (True, "EXT-1", ())


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_rejected("contact:003000000000001AAA"), "no mapping writes group type 'contact'"),
        (_rejected("account:not-an-id"), "is not a Salesforce record id"),
        (_rejected("nogroup"), "names no group"),
        (
            DlqEntry("m", "malformed", "", 0, "k", "{oops", source_topic="t"),
            "cannot tell which record",
        ),
        (
            DlqEntry("c", "malformed", "", 0, "/data/X", "{}", extra={"channel": "/data/X"}),
            "no readable header",
        ),
    ],
)
def test_entries_that_name_no_record_say_why(entry: DlqEntry, reason: str) -> None:
    found = targets_of(entry, CONFIG)
    assert isinstance(found, str)
    assert reason in found


def test_an_undecodable_change_is_named_by_its_key_and_topic() -> None:
    for value in ('{"hello":"world"}', "{oops", None):
        entry = DlqEntry(
            "m", "malformed", "", 0, ACCOUNT_ID, value, source_topic="p.changes.Account"
        )
        assert targets_of(entry, CONFIG) == [Target("Account", (ACCOUNT_ID,))], value
    elsewhere = DlqEntry("m", "malformed", "", 0, ACCOUNT_ID, "{oops", source_topic="p.other")
    assert "cannot tell which record" in str(targets_of(elsewhere, CONFIG))


def test_change_envelope_and_cdc_event_name_their_records() -> None:
    envelope = encode(change(ACCOUNT_ID, 1)).decode()
    unresolved = DlqEntry("u", "unresolved", "", 0, ACCOUNT_ID, envelope, source_topic="t")
    assert targets_of(unresolved, CONFIG) == [Target("Account", (ACCOUNT_ID,))]
    event = {
        "data": {
            "payload": {"ChangeEventHeader": {"entityName": "Account", "recordIds": [ACCOUNT_ID]}}
        }
    }
    cdc = DlqEntry(
        "c",
        "malformed",
        "",
        0,
        "/data/AccountChangeEvent",
        orjson.dumps(event).decode(),
        extra={"channel": "/data/AccountChangeEvent"},
    )
    assert targets_of(cdc, CONFIG) == [Target("Account", (ACCOUNT_ID,))]


def test_a_gone_record_follows_on_delete_of_each_mapping() -> None:
    target = Target("Account", (ACCOUNT_ID,))
    found = changes_of(target, {ACCOUNT_ID: None}, CONFIG, None, now_ms=5)
    marked = [(c.group_type, dict(c.set)) for c in found.changes]
    assert marked == [("account", {"sfdc_deleted": True})]
    # account_ext is named by External_Id__c, which a purged record no longer tells.
    assert len(found.problems) == 1
    assert "cannot be named" in found.problems[0]


def test_a_current_record_sets_what_it_holds_and_unsets_its_nulls() -> None:
    record = {
        "Id": ACCOUNT_ID,
        "IsDeleted": False,
        "Name": "Acme",
        "Industry": "Media",
        "AnnualRevenue": None,
    }
    found = changes_of(Target("Account", (ACCOUNT_ID,)), {ACCOUNT_ID: record}, CONFIG, None, 5)
    account = next(c for c in found.changes if c.group_type == "account")
    assert (account.group_value, account.set["industry"]) == (ACCOUNT_ID, "Media")
    assert account.unset == {"annual_revenue"}  # read as null: unset, as Salesforce says


@pytest.mark.parametrize(
    ("value", "sf_type", "literal"),
    [
        ("EXT-1", "string", "'EXT-1'"),
        ("it's", None, "'it\\'s'"),
        ("250", "double", "250"),
        ("25O", "double", None),
        ("true", "boolean", "true"),
        ("2026-01-01", "date", None),
    ],
)
def test_group_literal(value: str, sf_type: str | None, literal: str | None) -> None:
    assert group_literal(value, sf_type) == literal


def test_a_dismissal_settles_entries_and_unreadable_records_alike() -> None:
    malformed = DlqEntry("t:0:5", "malformed", "bad", 1, "001", "{", source_topic="t")
    garbage = Message("sfamp.dlq", 0, 1, 1001, b"k", b"not a dlq entry")
    items = fold_dlq([_message(0, malformed), garbage])
    assert [(i.id, i.settled) for i in items] == [("t:0:5", False), ("sfamp.dlq:0:1", False)]
    marks = [dismissal_marker(item, "looked at it", 7) for item in items]
    markers = [_message(2 + n, marker) for n, marker in enumerate(marks)]
    folded = fold_dlq([_message(0, malformed), garbage, *markers])
    assert [(i.id, i.dismissed, i.pending, i.replayed_detail) for i in folded] == [
        ("t:0:5", True, False, "looked at it"),
        ("sfamp.dlq:0:1", True, False, "looked at it"),
    ]
    assert select(folded, [], everything=True) == []


def test_unreplayable_names_what_no_replay_can_deliver_and_why() -> None:
    nameless = DlqEntry("m", "malformed", "", 0, "k", "{oops", source_topic="t")
    fine = _rejected(f"account:{ACCOUNT_ID}")
    garbage = Message("sfamp.dlq", 0, 2, 1002, b"k", b"{")
    items = fold_dlq([_message(0, nameless), _message(1, fine), garbage])
    found = unreplayable(items, CONFIG)
    assert set(found) == {"m", "sfamp.dlq:0:2"}
    assert "cannot tell which record" in found["m"]
    assert "not a DLQ entry" in found["sfamp.dlq:0:2"]
    outcomes = dismissals(items, found, note=None)
    assert [(o.id, o.dismissed) for o in outcomes] == [
        ("m", True),
        (fine.id, True),  # named by id: the operator's call
        ("sfamp.dlq:0:2", True),
    ]
    assert outcomes[0].detail == found["m"]
    assert outcomes[1].detail == "dismissed by an operator"


def test_a_time_stamp_beyond_the_calendar_is_shown_as_the_number() -> None:
    # Any producer can stamp a record with any 64-bit number; listing it must not fail.
    assert format_time(2**62) == f"{2**62} ms (not a date)"
    assert iso_time(-(2**62)) == f"{-(2**62)} ms (not a date)"
    assert iso_time(0) == "1970-01-01T00:00:00+00:00"
