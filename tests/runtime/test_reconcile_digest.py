"""The digest of what was sent: which properties it covers, its records, and the comparison."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.kafka.inspect import Message, expected_topic, topic_kind
from pipeline.kafka.sent import decode_sent_digest, decode_sent_key, sent_key
from pipeline.kafka.topic_rows import decode_row
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.backfill.checkpoint import CheckpointFile
from pipeline.runtime.backfill.read import ReadPosition
from pipeline.runtime.reconcile.checkpoint import open_checkpoint
from pipeline.runtime.reconcile.digest import (
    SentDigests,
    reconciled_fields,
    reconciled_mapping,
    reconciled_properties,
    sent_records,
    value_digest,
)
from pipeline.runtime.reconcile.report import ReconcileSummary
from pipeline.transform.group_update import GroupUpdate
from pipeline.transform.schema import schema_from_describe


def field(name: str, sf_type: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": sf_type, **extra}


ACCOUNT = schema_from_describe(
    {
        "name": "Account",
        "fields": [
            field("Id", "id"),
            field("Name"),
            field("Per__c", "currency", calculated=True, calculatedFormula="A / B"),
            field("Age__c", "double", calculated=True, calculatedFormula="TODAY() - D"),
            field("LastActivityDate", "date"),
        ],
    }
)
CONFIG = MappingConfig.model_validate(
    {
        "sync_cadence": {"mode": "hourly"},
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": "Per__c", "amplitude_property": "per"},
                    {"sfdc_field": "Age__c", "amplitude_property": "age"},
                    {"sfdc_field": "LastActivityDate", "amplitude_property": "active"},
                    {"sfdc_field": "Hidden__c", "amplitude_property": "hidden"},
                ],
            },
            {
                "sfdc_object": "Contact",
                "group_type": "contact",
                "group_name_field": "Id",
                "group_properties": [{"sfdc_field": "Name", "amplitude_property": "name"}],
            },
        ],
    }
)


def test_formulas_and_fields_events_never_carry_are_reconciled_ordinary_ones_not() -> None:
    account = CONFIG.mappings[0]
    # A formula the stream follows is reconciled too: TODAY() and other records move it.
    assert reconciled_fields(account, ACCOUNT) == ["Per__c", "Age__c", "LastActivityDate"]
    assert reconciled_fields(account, None) == []
    reduced = reconciled_mapping(account, ACCOUNT)
    assert reduced is not None
    assert [p.amplitude_property for p in reduced.group_properties] == ["per", "age", "active"]
    assert reconciled_mapping(CONFIG.mappings[1], ACCOUNT) is None
    schemas = {"Account": ACCOUNT}
    assert reconciled_properties(CONFIG, schemas.get) == {
        "account": frozenset({"per", "age", "active"})
    }


def test_records_cover_accepted_reconciled_properties_sets_and_unsets() -> None:
    updates = [
        GroupUpdate("account", "001A", {"name": "Acme", "per": 12.5}, frozenset({"age"})),
        GroupUpdate("account", "001B", {"per": 3}),
        GroupUpdate("contact", "003C", {"name": "Ada"}),
    ]
    records = sent_records(updates, [("account", "001B")], {"account": frozenset({"per", "age"})})
    decoded = {decode_sent_key(key): decode_sent_digest(value) for key, value in records}
    assert decoded == {
        ("account", "001A", "per"): value_digest(12.5),
        ("account", "001A", "age"): value_digest(None),
    }


def test_digests_compare_values_as_sent_and_unknown_keys_differ() -> None:
    digests = SentDigests()
    for key, value in sent_records(
        [GroupUpdate("account", "001A", {"per": 12.5, "tags": ["b", "a"]}, frozenset({"age"}))],
        [],
        {"account": frozenset({"per", "age", "tags"})},
    ):
        digests.load(key, value)
    assert len(digests) == 3
    assert not digests.differs("account", "001A", "per", 12.5)
    assert digests.differs("account", "001A", "per", 12.6)
    assert not digests.differs("account", "001A", "age", None)
    assert digests.differs("account", "001A", "age", 0)
    assert not digests.differs("account", "001A", "tags", ["b", "a"])
    assert digests.differs("account", "001A", "tags", ["a", "b"])
    assert digests.differs("account", "001B", "per", 12.5)  # nothing known: send
    digests.load(sent_key("account", "001A", "per"), None)  # a tombstone forgets
    assert digests.differs("account", "001A", "per", 12.5)


def test_types_are_part_of_the_value() -> None:
    assert value_digest("1") != value_digest(1)
    assert value_digest(True) != value_digest(1)
    assert value_digest({"b": 1, "a": 2}) == value_digest({"a": 2, "b": 1})


def test_topics_tail_shows_the_sent_topic_decoded() -> None:
    names = TopicNames("sfamp")
    assert topic_kind(names, "sfamp.sent") == "sent"
    assert expected_topic(names, "sent") == "sfamp.sent"
    [(key, value)] = sent_records(
        [GroupUpdate("account", "001A", {"per": 2})], [], {"account": frozenset({"per"})}
    )
    row = decode_row("sent", Message("sfamp.sent", 0, 7, 1000, key, value))
    assert (row["group_type"], row["group_value"], row["property"]) == ("account", "001A", "per")
    assert row["digest"] == f"{value_digest(2):016x}"
    bad = decode_row("sent", Message("sfamp.sent", 0, 8, 1000, b"x", b"y"))
    assert bad["malformed"] is not None


def test_a_dry_runs_summary_names_no_checkpoint() -> None:
    # A dry run writes none: the path it would have used is not reported as its checkpoint.
    path = ".sfamp/reconcile-checkpoint.json"
    assert ReconcileSummary(dry_run=True, checkpoint=path).to_json()["checkpoint"] is None
    assert ReconcileSummary(checkpoint=path).to_json()["checkpoint"] == path


def test_an_object_no_longer_read_does_not_keep_the_last_run_unfinished(tmp_path: Path) -> None:
    # Account finished; Contact, left unfinished, is no longer mapped. Counted as
    # unfinished, every run resumed it, found Account done and read nothing.
    path = tmp_path / "reconcile-checkpoint.json"
    left = CheckpointFile(path)
    left.save("Account", "f-account", ReadPosition(finished=True), complete=True)
    left.save("Contact", "f-contact", ReadPosition())
    plan = SimpleNamespace(sfdc_object="Account", fingerprint="f-account")

    opened = open_checkpoint(path, [plan])  # type: ignore[list-item]
    assert not opened.resumed
    entry = opened.entry(plan)  # type: ignore[arg-type]
    assert entry is not None
    assert not entry.complete  # Account is read again: a new run
    assert entry.position == ReadPosition()
