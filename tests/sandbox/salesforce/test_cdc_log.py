"""ChangeEventLog: event shape, replay ids, retention, the bounded ring and channel names."""

from __future__ import annotations

import pytest

from sfamp_sandbox.salesforce.cdc import (
    ALL_CHANGES_CHANNEL,
    ChangeEventLog,
    InvalidReplayIdError,
    RecordChange,
    channel_for_entity,
    entity_for_channel,
)
from tests.support.clock import FakeClock

START = 1_714_156_685.0


def create(entity: str = "Account", record_id: str = "001RM000004UF9sYAG") -> RecordChange:
    return RecordChange(entity, "CREATE", (record_id,), {"Name": "Acme"}, commit_user="005x")


def test_publish_builds_the_cometd_data_member() -> None:
    clock = FakeClock(START)
    log = ChangeEventLog(clock)
    change = RecordChange(
        "Account",
        "UPDATE",
        ("001RM000004UF9sYAG",),
        {"BillingAddress": {"City": "Oakland"}, "Fax": None},
        changed_fields=("BillingAddress.City", "Fax", "LastModifiedDate"),
        nulled_fields=("Fax",),
        commit_user="005RM000001hv4SYAQ",
        change_origin="com/salesforce/api/rest/62.0",
        transaction_key="0005e1af-70bd-cce1-59c2-00f45864bbfb",
        sequence_number=2,
    )
    assert log.publish(change) == 1
    [data] = log.events_after(0)
    header = data["payload"].pop("ChangeEventHeader")
    assert header == {
        "entityName": "Account",
        "recordIds": ["001RM000004UF9sYAG"],
        "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/rest/62.0",
        "transactionKey": "0005e1af-70bd-cce1-59c2-00f45864bbfb",
        "sequenceNumber": 2,
        "commitTimestamp": 1_714_156_685_000,
        "commitNumber": header["commitNumber"],
        "commitUser": "005RM000001hv4SYAQ",
        "nulledFields": ["Fax"],
        "diffFields": [],
        "changedFields": ["BillingAddress.City", "Fax", "LastModifiedDate"],
    }
    assert data["payload"] == {"BillingAddress": {"City": "Oakland"}, "Fax": None}
    assert data["event"] == {"replayId": 1}
    assert len(data["schema"]) == 22


def test_replay_ids_commit_numbers_and_transaction_keys() -> None:
    log = ChangeEventLog(FakeClock(START))
    ids = [log.publish(create()) for _ in range(3)]
    assert ids == [1, 2, 3]
    headers = [d["payload"]["ChangeEventHeader"] for d in log.events_after(0)]
    numbers = [h["commitNumber"] for h in headers]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3
    keys = {h["transactionKey"] for h in headers}
    assert len(keys) == 3  # generated when the change does not bring one
    assert log.latest_replay_id == 3


def test_schema_is_stable_per_entity_and_can_change() -> None:
    log = ChangeEventLog(FakeClock(START))
    assert log.schema_id("Account") == log.schema_id("Account")
    assert log.schema_id("Account") != log.schema_id("Contact")
    old = log.schema_id("Plan__c")
    new = log.change_schema("Plan__c")
    assert new != old
    log.publish(create("Plan__c"))
    assert log.events_after(0)[0]["schema"] == new


def test_unknown_change_type_is_refused() -> None:
    log = ChangeEventLog(FakeClock(START))
    with pytest.raises(ValueError, match="SNAPSHOT"):
        log.publish(RecordChange("Account", "SNAPSHOT", (), {}))
    assert log.latest_replay_id == 0


def test_resolve_replay_values() -> None:
    log = ChangeEventLog(FakeClock(START))
    for _ in range(5):
        log.publish(create())
    assert log.resolve_replay(-1) == 5
    assert log.resolve_replay(-2) == 0
    assert log.resolve_replay(3) == 3
    for bad in (0, 6, 99, -3):
        with pytest.raises(InvalidReplayIdError) as info:
            log.resolve_replay(bad)
        assert str(info.value) == (
            f"The replayId {{{bad}}} you provided was invalid.  Please provide a valid ID, "
            "-2 to replay all events, or -1 to replay only new events."
        )


def test_retention_drops_old_events_by_emulator_time() -> None:
    clock = FakeClock(START)
    log = ChangeEventLog(clock, retention_seconds=100.0)
    log.publish(create(record_id="old"))
    clock.now += 60
    log.publish(create(record_id="new"))
    clock.now += 50  # the first event is now 110 s old
    assert log.oldest_replay_id == 2
    assert len(log) == 1
    assert [d["payload"]["ChangeEventHeader"]["recordIds"] for d in log.events_after(-2)] == [
        ["new"]
    ]
    with pytest.raises(InvalidReplayIdError):
        log.resolve_replay(1)
    assert log.resolve_replay(-2) == 1
    clock.now += 1000
    assert log.oldest_replay_id is None
    assert log.resolve_replay(-2) == 2
    assert log.events_after(-2) == []


def test_ring_keeps_at_most_max_events() -> None:
    log = ChangeEventLog(FakeClock(START), max_events=4)
    for _ in range(10):
        log.publish(create())
    assert len(log) == 4
    assert log.oldest_replay_id == 7
    assert [d["event"]["replayId"] for d in log.events_after(-2)] == [7, 8, 9, 10]
    with pytest.raises(InvalidReplayIdError):
        log.resolve_replay(6)


def test_read_after_filters_by_entity_and_limits() -> None:
    log = ChangeEventLog(FakeClock(START))
    for entity in ("Account", "Contact", "Account", "Plan__c", "Account"):
        log.publish(create(entity))
    events, cursor = log.read_after(0, "Account", limit=2)
    assert [e.replay_id for e in events] == [1, 3]
    assert cursor == 3
    events, cursor = log.read_after(cursor, "Account", limit=2)
    assert [e.replay_id for e in events] == [5]
    assert cursor == 5
    assert log.events_after(0, entity_name="Plan__c")[0]["event"]["replayId"] == 4


def test_reset_forgets_events_but_keeps_replay_ids_increasing() -> None:
    log = ChangeEventLog(FakeClock(START))
    log.publish(create())
    log.reset()
    assert len(log) == 0
    assert log.publish(create()) == 2
    assert [d["event"]["replayId"] for d in log.events_after(-2)] == [2]


def test_listeners_run_on_publish() -> None:
    log = ChangeEventLog(FakeClock(START))
    calls: list[int] = []

    def listener() -> None:
        calls.append(log.latest_replay_id)

    log.add_listener(listener)
    log.publish(create())
    log.remove_listener(listener)
    log.publish(create())
    assert calls == [1]


@pytest.mark.parametrize(
    ("entity", "channel"),
    [
        ("Account", "/data/AccountChangeEvent"),
        ("Plan__c", "/data/Plan__ChangeEvent"),
        ("ns__Plan__c", "/data/ns__Plan__ChangeEvent"),
    ],
)
def test_channel_names_round_trip(entity: str, channel: str) -> None:
    assert channel_for_entity(entity) == channel
    assert entity_for_channel(channel) == entity


@pytest.mark.parametrize(
    "channel",
    ["/data/ChangeEvent", "/topic/Account", "/data/Acc/ChangeEvent", "/data/A__BChangeEvent"],
)
def test_malformed_channels_have_no_entity(channel: str) -> None:
    assert entity_for_channel(channel) is None


def test_channel_filter_honours_selected_entities() -> None:
    log = ChangeEventLog(FakeClock(START))
    assert log.channel_filter(ALL_CHANGES_CHANNEL) == ""
    assert log.channel_filter("/data/LeadChangeEvent") == "Lead"
    log.select_entities(["Account", "Plan__c"])
    assert log.channel_filter("/data/Plan__ChangeEvent") == "Plan__c"
    with pytest.raises(KeyError):
        log.channel_filter("/data/LeadChangeEvent")
