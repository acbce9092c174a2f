"""CometD CDC messages and re-read records into change envelopes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.errors import EnvelopeError
from pipeline.salesforce.change_events import envelopes_from_event
from pipeline.transform.envelope import decode, encode
from pipeline.transform.reads import deleted_envelope, envelope_from_record
from tests.transform.fixtures import (
    ACCOUNT_ID,
    CREATE_BODY,
    OTHER_ACCOUNT_ID,
    UPDATE_BODY,
    UPDATE_CHANGED,
    cdc_message,
)


def test_create_becomes_one_envelope_with_the_header_and_body() -> None:
    (env,) = envelopes_from_event(cdc_message("CREATE", body=CREATE_BODY, replay_id=18098160))
    assert env.op == "create"
    assert env.object == "Account"
    assert env.record_id == ACCOUNT_ID
    assert env.channel == "/data/AccountChangeEvent"
    assert env.replay_id == 18098160
    assert env.ordering == (1714157000000, 1100670840000, 1)
    assert env.transaction_key == "00005e1a-9e62-2554-3880-3c3718bd6308"
    assert env.fields["BillingAddress"]["City"] == "San Francisco"
    assert "ChangeEventHeader" not in env.fields
    assert env.nulled == ()
    assert env.full is False
    assert env.source == "cdc"


def test_update_keeps_changed_fields_and_collects_nulls() -> None:
    message = cdc_message("UPDATE", body=UPDATE_BODY, changed=UPDATE_CHANGED)
    (env,) = envelopes_from_event(message)
    assert env.op == "update"
    assert env.changed == UPDATE_CHANGED
    assert env.nulled == ("Fax",)
    assert env.fields == UPDATE_BODY


def test_null_compound_component_is_nulled_in_dotted_form() -> None:
    body = {"BillingAddress": {"City": None, "State": "CA"}, "Name": "Acme"}
    (env,) = envelopes_from_event(cdc_message("UPDATE", body=body))
    assert env.nulled == ("BillingAddress.City",)


def test_nulled_fields_header_and_body_nulls_are_merged_once() -> None:
    message = cdc_message(
        "UPDATE", body={"Fax": None, "Phone": None}, nulledFields=["Fax", "Description"]
    )
    (env,) = envelopes_from_event(message)
    assert env.nulled == ("Fax", "Description", "Phone")


def test_merged_delete_gives_one_envelope_per_record() -> None:
    message = cdc_message("DELETE", record_ids=[ACCOUNT_ID, OTHER_ACCOUNT_ID, ACCOUNT_ID])
    envelopes = envelopes_from_event(message)
    assert [env.record_id for env in envelopes] == [ACCOUNT_ID, OTHER_ACCOUNT_ID]
    assert {env.op for env in envelopes} == {"delete"}
    assert envelopes[0].ordering == envelopes[1].ordering
    assert envelopes[0].fields == {}


def test_undelete() -> None:
    (env,) = envelopes_from_event(cdc_message("UNDELETE", body=CREATE_BODY))
    assert env.op == "undelete"
    assert env.fields["Name"] == "Acme"


@pytest.mark.parametrize(
    ("change_type", "op"),
    [
        ("GAP_CREATE", "gap_create"),
        ("GAP_UPDATE", "gap_update"),
        ("GAP_DELETE", "gap_delete"),
        ("GAP_UNDELETE", "gap_undelete"),
    ],
)
def test_gap_events_name_their_records(change_type: str, op: str) -> None:
    # Reference A.5: header only, several ids when merged.
    message = cdc_message(change_type, record_ids=["00URM000001W22b2AC", "00URM000001W22c2AC"])
    envelopes = envelopes_from_event(message)
    assert [env.op for env in envelopes] == [op, op]
    assert [env.record_id for env in envelopes] == ["00URM000001W22b2AC", "00URM000001W22c2AC"]


def test_overflow_becomes_one_envelope_without_a_record() -> None:
    message = cdc_message(
        "GAP_OVERFLOW", record_ids=[], entity="Opportunity", sequence_number=100001
    )
    (env,) = envelopes_from_event(message)
    assert env.op == "gap_overflow"
    assert env.record_id == ""
    assert env.object == "Opportunity"
    assert env.kafka_key == b"Opportunity"
    assert decode(encode(env)) == env


def test_parsed_envelopes_survive_the_codec() -> None:
    message = cdc_message("UPDATE", body=UPDATE_BODY, changed=UPDATE_CHANGED)
    for env in envelopes_from_event(message):
        assert decode(encode(env)) == env


def broken(path: str, value: Any) -> dict[str, Any]:
    message = cdc_message("UPDATE", body=UPDATE_BODY, changed=UPDATE_CHANGED)
    *parents, last = path.split("/")
    node: Any = message
    for part in parents:
        node = node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return message


_DROP = object()
HEADER = "data/payload/ChangeEventHeader"


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("channel", _DROP, "message.channel must be str, got missing"),
        ("data", "x", "message.data must be dict, got str"),
        ("data/payload", _DROP, "data.payload must be dict"),
        ("data/event", _DROP, "data.event must be dict"),
        ("data/event/replayId", "13", "data.event.replayId must be int, got str"),
        ("data/payload/ChangeEventHeader", _DROP, "payload.ChangeEventHeader must be dict"),
        (f"{HEADER}/entityName", _DROP, "entityName must be str"),
        (f"{HEADER}/changeType", "SNAPSHOT", "unknown CDC changeType 'SNAPSHOT'"),
        (f"{HEADER}/changeType", _DROP, "changeType must be str"),
        (f"{HEADER}/commitTimestamp", "1714157000000", "commitTimestamp must be int"),
        (f"{HEADER}/commitTimestamp", True, "commitTimestamp must be int"),
        (f"{HEADER}/recordIds", _DROP, "recordIds must be list"),
        (f"{HEADER}/recordIds", [], "recordIds must be a non-empty list"),
        (f"{HEADER}/recordIds", [""], "recordIds must be a non-empty list"),
        (f"{HEADER}/sequenceNumber", "1", "sequenceNumber must be int"),
        (f"{HEADER}/changedFields", "Fax", "changedFields must be a list of field names"),
        (f"{HEADER}/changedFields", [1], "changedFields must be a list of field names"),
    ],
)
def test_malformed_events_are_refused(path: str, value: Any, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        envelopes_from_event(broken(path, value))


def test_non_object_message_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="must be an object"):
        envelopes_from_event([])  # type: ignore[arg-type]


def test_rest_record_becomes_a_full_envelope() -> None:
    record = {
        "attributes": {
            "type": "Account",
            "url": f"/services/data/v66.0/sobjects/Account/{ACCOUNT_ID}",
        },
        "Id": ACCOUNT_ID,
        "Name": "Acme",
        "BillingAddress": {"city": "Oakland", "street": None},
    }
    original = copy.deepcopy(record)
    env = envelope_from_record("Account", record, source="rest", now_ms=1714160000000)
    assert env.full is True
    assert env.op == "update"
    assert env.source == "rest"
    assert env.ordering == (1714160000000, 0, 0)
    assert env.replay_id is None
    assert "attributes" not in env.fields
    assert env.fields["Name"] == "Acme"
    assert record == original
    assert decode(encode(env)) == env


@pytest.mark.parametrize("flag", [True, "true"])
def test_deleted_row_from_query_all_becomes_a_delete(flag: object) -> None:
    record = {"Id": ACCOUNT_ID, "Name": "Acme", "IsDeleted": flag}
    env = envelope_from_record("Account", record, source="bulk", now_ms=1)
    assert env.op == "delete"
    assert env.full is True


def test_live_csv_row_is_an_update() -> None:
    env = envelope_from_record(
        "Account", {"Id": ACCOUNT_ID, "IsDeleted": "false"}, source="bulk", now_ms=1
    )
    assert env.op == "update"


@pytest.mark.parametrize("record", [{}, {"Id": ""}, {"Id": 5}])
def test_record_without_id_is_refused(record: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError, match="without an Id"):
        envelope_from_record("Account", record, source="rest", now_ms=1)


def test_deleted_envelope_for_a_record_that_is_gone() -> None:
    env = deleted_envelope("Account", ACCOUNT_ID, source="rest", now_ms=1714160000000)
    assert (env.op, env.record_id, env.commit_ts, env.fields) == (
        "delete",
        ACCOUNT_ID,
        1714160000000,
        {},
    )
