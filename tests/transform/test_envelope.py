"""The change envelope codec: round trips and every way a message can be malformed."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson
import pytest

from pipeline.errors import EnvelopeError
from pipeline.transform.envelope import ChangeEnvelope, decode, encode

UPDATE = ChangeEnvelope(
    object="Account",
    record_id="001RM000004UF9sYAG",
    op="update",
    commit_ts=1714157000000,
    commit_number=1100670840000,
    transaction_key="000046c7-a642-11e2-c29b-229c6786473e",
    sequence_number=1,
    channel="/data/AccountChangeEvent",
    replay_id=18098167,
    changed=("BillingAddress.City", "Fax", "LastModifiedDate"),
    nulled=("Fax",),
    fields={"BillingAddress": {"City": "Oakland"}, "Fax": None, "Tags__c": ["a", 1.5, True]},
)
FULL = ChangeEnvelope(
    object="Account",
    record_id="001RM000004UF9tYAG",
    op="update",
    commit_ts=1714160000000,
    fields={"Id": "001RM000004UF9tYAG", "Name": "Globex", "AnnualRevenue": "1500000.0"},
    full=True,
    source="bulk",
)
OVERFLOW = ChangeEnvelope(
    object="Opportunity", record_id="", op="gap_overflow", commit_ts=1714160000000
)


def wire(**overrides: Any) -> bytes:
    data = orjson.loads(encode(UPDATE))
    for key, value in overrides.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data)


_DROP = object()


@pytest.mark.parametrize("envelope", [UPDATE, FULL, OVERFLOW], ids=["update", "full", "overflow"])
def test_round_trip_gives_an_equal_envelope(envelope: ChangeEnvelope) -> None:
    assert decode(encode(envelope)) == envelope


def test_wire_form_matches_the_design_sketch() -> None:
    data = orjson.loads(encode(UPDATE))
    assert data["v"] == 1
    assert data["op"] == "update"
    assert data["changed"] == ["BillingAddress.City", "Fax", "LastModifiedDate"]
    assert data["fields"]["BillingAddress"] == {"City": "Oakland"}
    assert data["full"] is False
    assert data["source"] == "cdc"


def test_read_only_fields_mapping_is_encoded() -> None:
    env = ChangeEnvelope(
        object="Account",
        record_id="001",
        op="create",
        commit_ts=1,
        fields=MappingProxyType({"Name": "Acme"}),
    )
    assert decode(encode(env)).fields == {"Name": "Acme"}


def test_ordering_and_kafka_key() -> None:
    assert UPDATE.ordering == (1714157000000, 1100670840000, 1)
    assert UPDATE.kafka_key == b"001RM000004UF9sYAG"
    assert OVERFLOW.kafka_key == b"Opportunity"


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    assert decode(wire(added_later="x")) == UPDATE


def test_optional_keys_default() -> None:
    env = decode(wire(full=_DROP, source=_DROP))
    assert env.full is False
    assert env.source == "cdc"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object, got a list"),
        (b'"text"', "must be a JSON object, got a string"),
        (b"null", "must be a JSON object, got null"),
    ],
)
def test_unreadable_messages_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(raw)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="must be bytes"):
        decode("{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [_DROP, 2, 0, "1", True, None])
def test_wrong_version_is_refused(version: object) -> None:
    with pytest.raises(EnvelopeError, match="unsupported envelope version"):
        decode(wire(v=version))


@pytest.mark.parametrize(
    "key",
    [
        "object",
        "record_id",
        "op",
        "commit_ts",
        "commit_number",
        "transaction_key",
        "sequence_number",
        "channel",
        "replay_id",
        "changed",
        "nulled",
        "fields",
    ],
)
def test_missing_key_is_named(key: str) -> None:
    with pytest.raises(EnvelopeError, match=f"has no '{key}'"):
        decode(wire(**{key: _DROP}))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("object", 5, "'object' must be a string, got an integer"),
        ("record_id", None, "'record_id' must be a string, got null"),
        ("commit_ts", "1714157000000", "'commit_ts' must be an integer, got a string"),
        ("commit_ts", 1714157000000.5, "'commit_ts' must be an integer, got float"),
        ("commit_ts", True, "'commit_ts' must be an integer, got a boolean"),
        ("sequence_number", [1], "'sequence_number' must be an integer, got a list"),
        ("replay_id", "18098167", "'replay_id' must be an integer or null"),
        ("changed", "Fax", "'changed' must be a list"),
        ("nulled", {"Fax": True}, "'nulled' must be a list, got an object"),
        ("fields", [], "'fields' must be an object, got a list"),
        ("full", "yes", "'full' must be a boolean"),
        ("source", 1, "'source' must be a string"),
    ],
)
def test_wrong_types_are_named(key: str, value: object, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(wire(**{key: value}))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"op": "upsert"}, "op 'upsert' is not one of"),
        ({"op": "UPDATE"}, "op 'UPDATE' is not one of"),
        ({"object": ""}, "'object' is empty"),
        ({"record_id": ""}, "'record_id' is empty for op 'update'"),
        ({"source": "soap"}, "source 'soap' is not one of"),
        ({"changed": ["Fax", 3]}, "'changed' must hold only field names"),
        ({"nulled": [None]}, "'nulled' must hold only field names"),
    ],
)
def test_meaningless_values_are_refused(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(wire(**overrides))


def test_only_overflow_may_name_no_record() -> None:
    assert decode(wire(op="gap_overflow", record_id="")).record_id == ""
    with pytest.raises(EnvelopeError, match="empty for op 'gap_update'"):
        decode(wire(op="gap_update", record_id=""))
